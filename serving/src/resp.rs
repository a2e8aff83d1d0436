//! The one Redis exchange a recommendation makes, spoken directly over the socket: a
//! `GET` of the user's vector and an `LRANGE` of their history in one write, and a parser
//! for exactly those two replies.
//!
//! redis-rs's multiplexed connection sends through a driver task: a lookup is written
//! when that task's turn comes on the worker's event loop and its reply comes back
//! through it, behind whatever searches the loop runs first; its parser builds a value
//! tree with an allocation per history item. Here the request's own task writes the
//! command the moment it asks and is woken by the socket itself, and the reply is read
//! straight into the vector's bytes and the history's strings.

use std::io;
use std::sync::Arc;

use recsys_index::store::Recent;
use redis::{ConnectionAddr, ConnectionInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How one exchange failed.
#[derive(Debug)]
pub enum Failure {
    /// The connection broke (or never opened): Redis is likely down for every
    /// connection of this address.
    Io(io::Error),
    /// Redis answered with an error, or with something this parser does not expect;
    /// the connection is dropped, the others are fine.
    Reply(String),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "redis connection: {e}"),
            Self::Reply(e) => write!(f, "redis reply: {e}"),
        }
    }
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

/// One connection, used by one lookup at a time.
pub struct Conn {
    stream: Stream,
    /// The command being sent.
    out: Vec<u8>,
    /// The reply read so far.
    input: Vec<u8>,
}

/// A user's vector bytes (if the key exists) and history, newest first.
pub type Lookup = (Option<Vec<u8>>, Recent);

impl Conn {
    /// Connects to `info`'s address (TCP with `TCP_NODELAY`, TLS over it with `tls` for
    /// `rediss://`, or a Unix socket) and authenticates and selects its database as its
    /// URL says.
    pub async fn open(
        info: &ConnectionInfo,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<Self, Failure> {
        let tcp = |host: &str, port: u16| {
            let host = host.to_owned();
            async move {
                let s = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                // Every lookup is one write that waits for its answer; Nagle's algorithm
                // would hold nothing back here, but a connection is never left to it.
                s.set_nodelay(true)?;
                io::Result::Ok(s)
            }
        };
        let stream = match info.addr() {
            ConnectionAddr::Tcp(host, port) => Stream::Tcp(tcp(host, *port).await?),
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                ..
            } => {
                let Some(tls) = tls else {
                    return Err(Failure::Reply("rediss:// needs a TLS configuration".into()));
                };
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| Failure::Reply(format!("{host}: {e}")))?;
                let s = tcp(host, *port).await?;
                let s = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, s)
                    .await?;
                Stream::Tls(Box::new(s))
            }
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => {
                Stream::Unix(tokio::net::UnixStream::connect(path).await?)
            }
            other => {
                return Err(Failure::Reply(format!(
                    "{other}: the user store speaks TCP, TLS with verification or a Unix \
                     socket to Redis"
                )));
            }
        };
        let mut conn = Self {
            stream,
            out: Vec::with_capacity(256),
            input: Vec::with_capacity(4096),
        };
        let settings = info.redis_settings();
        let mut commands = 0;
        if let Some(password) = settings.password() {
            match settings.username() {
                Some(user) => command(
                    &mut conn.out,
                    &[b"AUTH", user.as_bytes(), password.as_bytes()],
                ),
                None => command(&mut conn.out, &[b"AUTH", password.as_bytes()]),
            }
            commands += 1;
        }
        if settings.db() != 0 {
            command(
                &mut conn.out,
                &[b"SELECT", settings.db().to_string().as_bytes()],
            );
            commands += 1;
        }
        if commands > 0 {
            conn.send().await?;
            conn.receive(|input| parse_oks(input, commands)).await?;
        }
        Ok(conn)
    }

    /// `GET vector_key` and `LRANGE history_key 0 max_recent-1`, in one write.
    pub async fn lookup(
        &mut self,
        vector_key: &str,
        history_key: &str,
        max_recent: usize,
    ) -> Result<Lookup, Failure> {
        // `LRANGE key 0 -1` would be the whole list; `1 0` is an empty range.
        let (first, last) = match max_recent {
            0 => ("1".to_owned(), "0".to_owned()),
            n => ("0".to_owned(), (n - 1).to_string()),
        };
        command(&mut self.out, &[b"GET", vector_key.as_bytes()]);
        command(
            &mut self.out,
            &[
                b"LRANGE",
                history_key.as_bytes(),
                first.as_bytes(),
                last.as_bytes(),
            ],
        );
        self.send().await?;
        self.receive(parse_lookup).await
    }

    async fn send(&mut self) -> io::Result<()> {
        let result = match &mut self.stream {
            Stream::Tcp(s) => s.write_all(&self.out).await,
            // The record is sealed and written on flush.
            Stream::Tls(s) => match s.write_all(&self.out).await {
                Ok(()) => s.flush().await,
                Err(e) => Err(e),
            },
            #[cfg(unix)]
            Stream::Unix(s) => s.write_all(&self.out).await,
        };
        self.out.clear();
        result
    }

    /// Reads until `parse` finds a whole answer in what has arrived, which must be all
    /// that has arrived.
    async fn receive<T>(
        &mut self,
        parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, String>,
    ) -> Result<T, Failure> {
        self.input.clear();
        loop {
            if let Some((value, used)) = parse(&self.input).map_err(Failure::Reply)? {
                if used != self.input.len() {
                    return Err(Failure::Reply(format!(
                        "{} bytes past the answer",
                        self.input.len() - used
                    )));
                }
                return Ok(value);
            }
            self.input.reserve(4096);
            let read = match &mut self.stream {
                Stream::Tcp(s) => s.read_buf(&mut self.input).await?,
                Stream::Tls(s) => s.read_buf(&mut self.input).await?,
                #[cfg(unix)]
                Stream::Unix(s) => s.read_buf(&mut self.input).await?,
            };
            if read == 0 {
                return Err(Failure::Io(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }
}

/// Appends one command in RESP: an array of bulk strings.
fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    use std::io::Write;
    // Writing to a `Vec` cannot fail.
    let _ = write!(out, "*{}\r\n", args.len());
    for arg in args {
        let _ = write!(out, "${}\r\n", arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// The line starting at `at` (without its CRLF) and where the next starts; `None` until
/// the CRLF has arrived.
fn line(input: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = input.get(at..)?;
    // Only headers are searched (a bulk string's length says where it ends), and they
    // are a few bytes long.
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], at + end + 2))
}

fn integer(digits: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad length {:?}", String::from_utf8_lossy(digits)))
}

/// A reply line that is not the kind expected: Redis's error, or a protocol mismatch.
fn unexpected(header: &[u8], wanted: &str) -> String {
    match header.split_first() {
        Some((b'-', message)) => String::from_utf8_lossy(message).into_owned(),
        _ => format!(
            "expected {wanted}, got {:?}",
            String::from_utf8_lossy(&header[..header.len().min(64)])
        ),
    }
}

/// A bulk string (`None` for nil) at `at`, and where the next reply starts.
#[allow(clippy::type_complexity)]
fn bulk(input: &[u8], at: usize) -> Result<Option<(Option<&[u8]>, usize)>, String> {
    let Some((header, body)) = line(input, at) else {
        return Ok(None);
    };
    let Some(digits) = header.strip_prefix(b"$") else {
        return Err(unexpected(header, "a bulk string"));
    };
    let len = integer(digits)?;
    if len < 0 {
        return Ok(Some((None, body)));
    }
    let end = body + usize::try_from(len).map_err(|e| e.to_string())?;
    match input.get(end..end + 2) {
        None => Ok(None),
        Some(b"\r\n") => Ok(Some((Some(&input[body..end]), end + 2))),
        Some(_) => Err("a bulk string without its CRLF".into()),
    }
}

/// The replies to `GET` and `LRANGE`, and the bytes they took; `None` while incomplete.
fn parse_lookup(input: &[u8]) -> Result<Option<(Lookup, usize)>, String> {
    let Some((vector, at)) = bulk(input, 0)? else {
        return Ok(None);
    };
    let Some((header, mut at)) = line(input, at) else {
        return Ok(None);
    };
    let Some(digits) = header.strip_prefix(b"*") else {
        return Err(unexpected(header, "an array"));
    };
    let count = usize::try_from(integer(digits)?.max(0)).map_err(|e| e.to_string())?;
    // The history's items are checked as they come; a count no reply this size could
    // hold is not trusted for the allocation.
    let mut recent = Recent::with_capacity(count.min(input.len() / 4), input.len() - at);
    for _ in 0..count {
        let Some((item, next)) = bulk(input, at)? else {
            return Ok(None);
        };
        let item = item.ok_or("a nil item in a list")?;
        recent.push(
            std::str::from_utf8(item)
                .map_err(|_| "a history item that is not UTF-8".to_string())?,
        );
        at = next;
    }
    Ok(Some(((vector.map(<[u8]>::to_vec), recent), at)))
}

/// `count` `+OK` replies.
fn parse_oks(input: &[u8], count: usize) -> Result<Option<((), usize)>, String> {
    let mut at = 0;
    for _ in 0..count {
        let Some((reply, next)) = line(input, at) else {
            return Ok(None);
        };
        if reply != b"+OK" {
            return Err(unexpected(reply, "+OK"));
        }
        at = next;
    }
    Ok(Some(((), at)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLY: &[u8] = b"$4\r\n\x01\x02\r\n\r\n*3\r\n$1\r\nc\r\n$0\r\n\r\n$2\r\n\xc3\xa9\r\n";

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"GET", b"u:1:a b"]);
        command(&mut out, &[b"LRANGE", b"h:a", b"0", b"499"]);
        assert_eq!(
            out,
            b"*2\r\n$3\r\nGET\r\n$7\r\nu:1:a b\r\n*4\r\n$6\r\nLRANGE\r\n$3\r\nh:a\r\n$1\r\n0\r\n$3\r\n499\r\n"
        );
    }

    #[test]
    fn a_whole_reply_parses_and_every_prefix_asks_for_more() {
        let ((vector, recent), used) = parse_lookup(REPLY).unwrap().unwrap();
        // The vector's bytes may hold CR and LF: the length, not a search, ends them.
        assert_eq!(vector.as_deref(), Some(&b"\x01\x02\r\n"[..]));
        assert_eq!(recent, ["c", "", "é"]);
        assert_eq!(used, REPLY.len());
        for end in 0..REPLY.len() {
            assert!(
                parse_lookup(&REPLY[..end]).unwrap().is_none(),
                "prefix of {end} bytes"
            );
        }
    }

    #[test]
    fn a_missing_vector_and_an_empty_history() {
        let input = b"$-1\r\n*0\r\n";
        let ((vector, recent), used) = parse_lookup(input).unwrap().unwrap();
        assert_eq!((vector, recent.len(), used), (None, 0, input.len()));
    }

    #[test]
    fn errors_and_surprises_are_reported_not_parsed() {
        let wrongtype =
            b"$-1\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
        assert!(
            parse_lookup(wrongtype)
                .unwrap_err()
                .starts_with("WRONGTYPE")
        );
        assert!(
            parse_lookup(b":1\r\n*0\r\n")
                .unwrap_err()
                .contains("bulk string")
        );
        assert!(parse_lookup(b"$x\r\n").unwrap_err().contains("bad length"));
        assert!(
            parse_lookup(b"$1\r\nab\r\n*0\r\n")
                .unwrap_err()
                .contains("CRLF")
        );
        assert!(
            parse_lookup(b"$-1\r\n*1\r\n$-1\r\n")
                .unwrap_err()
                .contains("nil")
        );
        assert!(
            parse_lookup(b"$-1\r\n*1\r\n$1\r\n\xff\r\n")
                .unwrap_err()
                .contains("UTF-8")
        );
        // A huge count on a short reply waits for the items rather than allocating.
        assert!(parse_lookup(b"$-1\r\n*999999999999\r\n").unwrap().is_none());
    }

    #[test]
    fn handshake_replies() {
        assert_eq!(parse_oks(b"+OK\r\n+OK\r\n", 2).unwrap(), Some(((), 10)));
        assert_eq!(parse_oks(b"+OK\r\n+O", 2).unwrap(), None);
        assert_eq!(
            parse_oks(b"-WRONGPASS invalid password\r\n", 1).unwrap_err(),
            "WRONGPASS invalid password"
        );
    }
}
