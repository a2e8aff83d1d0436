//! Read half of the user-vector store: a user's vector in a generation and their recent
//! items. Redis in production, the engine's in-memory store in the all-in-one mode.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use recsys_index::store::{MemoryUserStore, UserRecord};
use recsys_schemas::config::TlsPem;
use recsys_schemas::contract::{decode_vector, user_history_key, user_vector_key};

use crate::resp::{Conn, Failure};
use crate::{Result, ServingError};

#[async_trait]
pub trait UserVectorStore: Send + Sync {
    /// The user's vector in `generation` (if any) and recent items (newest first, at most
    /// `max_recent`). Fails with [`ServingError::StoreUnavailable`] or
    /// [`ServingError::StoreCorrupt`]; callers answer from a fallback, never with a 5xx.
    async fn get(&self, generation: u64, user_id: &str, max_recent: usize) -> Result<UserRecord>;
}

/// Reads `u:{gen}:{user}` and `h:{user}` in one round trip, over a connection of the
/// calling thread's own that the lookup has to itself.
///
/// Each thread that looks users up (an HTTP worker, in practice) keeps a small pool of
/// idle connections, opened on its own event loop as its concurrent lookups need them:
/// a lookup takes one, writes its command from the request's own task the moment it
/// asks, is woken by that socket when the answer arrives, and gives the connection
/// back (see [`crate::resp`] for why not redis-rs's multiplexed connection). A lookup
/// never crosses threads.
///
/// When an idle connection turns out broken, the thread drops all its idle ones (Redis
/// likely restarted under every one of them) and the lookup tries once more on a new
/// connection. When that fails too, or a new connection cannot be opened, the thread
/// answers "unavailable" (a fallback, never a 5xx) without waiting until
/// `RECONNECT_AFTER` has passed, then connects again. A thread's connections live as
/// long as the thread (a dropped store leaves its idle connections there until then),
/// and each belongs to the event loop that opened it, so a thread must keep one event
/// loop for its lookups, as actix workers and tokio workers do.
pub struct RedisUserVectorStore {
    info: redis::ConnectionInfo,
    /// For `rediss://` URLs.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Tells this store's connections from other stores' in the thread-local map.
    key: u64,
    timeout: Duration,
}

/// How long a thread waits after a failed connection before it tries again.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// Idle connections a thread keeps per store; more are closed when given back.
const MAX_IDLE: usize = 64;

#[derive(Default)]
struct Pool {
    idle: Vec<Conn>,
    down_since: Option<Instant>,
}

thread_local! {
    static POOLS: RefCell<HashMap<u64, Pool>> = RefCell::new(HashMap::new());
}

impl RedisUserVectorStore {
    /// Checks that `url` answers (waiting at most 5 s); every later call gives up after
    /// `timeout`. A `rediss://` URL trusts the system's roots.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self> {
        Self::connect_tls(url, &TlsPem::default(), timeout).await
    }

    /// The same, where a `rediss://` URL trusts and presents what `tls` holds.
    pub async fn connect_tls(url: &str, tls: &TlsPem, timeout: Duration) -> Result<Self> {
        use redis::IntoConnectionInfo;
        static NEXT_KEY: AtomicU64 = AtomicU64::new(0);
        let info = url
            .into_connection_info()
            .map_err(|e| ServingError::StoreUnavailable(e.to_string()))?;
        // The check's connection belongs to this event loop, which need not be one that
        // looks users up: it is closed, not pooled.
        let tls = match info.addr() {
            redis::ConnectionAddr::TcpTls { .. } => Some(crate::tls::client_config(tls)?),
            _ => None,
        };
        tokio::time::timeout(Duration::from_secs(5), Conn::open(&info, tls.as_ref()))
            .await
            .map_err(|_| ServingError::StoreUnavailable(format!("connecting to {url} timed out")))?
            .map_err(|e| ServingError::StoreUnavailable(e.to_string()))?;
        Ok(Self {
            info,
            tls,
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            timeout,
        })
    }

    fn with_pool<T>(&self, f: impl FnOnce(&mut Pool) -> T) -> T {
        POOLS.with(|pools| f(pools.borrow_mut().entry(self.key).or_default()))
    }

    /// After a broken connection: every idle one is likely broken too.
    fn mark_down(&self) {
        self.with_pool(|pool| {
            pool.idle.clear();
            pool.down_since = Some(Instant::now());
        });
    }

    /// An idle connection of this thread (and `true`), or a new one (within `timeout`).
    async fn checkout(&self, timeout: Duration) -> Result<(Conn, bool)> {
        let idle = self.with_pool(|pool| match pool.down_since {
            Some(at) if at.elapsed() < RECONNECT_AFTER => Err(ServingError::StoreUnavailable(
                "redis unreachable; reconnecting shortly".into(),
            )),
            _ => Ok(pool.idle.pop()),
        })?;
        if let Some(conn) = idle {
            return Ok((conn, true));
        }
        match tokio::time::timeout(timeout, Conn::open(&self.info, self.tls.as_ref())).await {
            Ok(Ok(conn)) => {
                self.with_pool(|pool| pool.down_since = None);
                Ok((conn, false))
            }
            Ok(Err(e)) => {
                self.mark_down();
                Err(ServingError::StoreUnavailable(e.to_string()))
            }
            Err(_) => {
                self.mark_down();
                Err(ServingError::StoreUnavailable(
                    "connecting to redis timed out".into(),
                ))
            }
        }
    }
}

#[async_trait]
impl UserVectorStore for RedisUserVectorStore {
    async fn get(&self, generation: u64, user_id: &str, max_recent: usize) -> Result<UserRecord> {
        let started = Instant::now();
        let (vector_key, history_key) = (
            user_vector_key(generation, user_id),
            user_history_key(user_id),
        );
        let mut retried = false;
        let (conn, (vector, recent)) = loop {
            let (mut conn, pooled) = self
                .checkout(self.timeout.saturating_sub(started.elapsed()))
                .await?;
            let left = self.timeout.saturating_sub(started.elapsed());
            let answer =
                tokio::time::timeout(left, conn.lookup(&vector_key, &history_key, max_recent))
                    .await;
            // A connection whose answer is abandoned or failed is dropped, never reused:
            // its next read could be this answer.
            match answer {
                Err(_) => {
                    return Err(ServingError::StoreUnavailable(
                        "redis call timed out".into(),
                    ));
                }
                // An idle connection that broke while it waited (Redis restarted, say)
                // tells nothing of Redis now: the ones idle with it are dropped too, and
                // the lookup tries once more on a new connection.
                Ok(Err(Failure::Io(_))) if pooled && !retried => {
                    self.with_pool(|pool| pool.idle.clear());
                    retried = true;
                }
                Ok(Err(Failure::Io(e))) => {
                    self.mark_down();
                    return Err(ServingError::StoreUnavailable(e.to_string()));
                }
                Ok(Err(e @ Failure::Reply(_))) => {
                    return Err(ServingError::StoreUnavailable(e.to_string()));
                }
                Ok(Ok(reply)) => break (conn, reply),
            }
        };
        self.with_pool(|pool| {
            if pool.idle.len() < MAX_IDLE {
                pool.idle.push(conn);
            }
        });
        let vector = match vector {
            None => None,
            Some(bytes) => Some(decode_vector(&bytes).ok_or_else(|| {
                ServingError::StoreCorrupt(format!(
                    "{} bytes is not a whole number of f32",
                    bytes.len()
                ))
            })?),
        };
        Ok(UserRecord { vector, recent })
    }
}

#[async_trait]
impl UserVectorStore for MemoryUserStore {
    async fn get(&self, generation: u64, user_id: &str, max_recent: usize) -> Result<UserRecord> {
        let mut record = MemoryUserStore::get(self, generation, user_id);
        record.recent.truncate(max_recent);
        Ok(record)
    }
}

#[async_trait]
impl<T: UserVectorStore + ?Sized> UserVectorStore for Arc<T> {
    async fn get(&self, generation: u64, user_id: &str, max_recent: usize) -> Result<UserRecord> {
        (**self).get(generation, user_id, max_recent).await
    }
}
