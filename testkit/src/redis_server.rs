//! A redis-server of our own on a free loopback port, stopped on drop: for the tests and
//! `recsys bench serve` (Debian package `redis-server`; `deploy/dev` installs it).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
    /// Set by [`RedisServer::start_tls`].
    pub tls: Option<TlsFiles>,
}

/// The PEM files of a TLS server: a CA of the test's own, the server's certificate for
/// 127.0.0.1 signed by it, and a client certificate signed by it.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl RedisServer {
    /// Starts `redis-server` (Debian package `redis-server`) with no persistence.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::launch(dir, port, &["--port", &port.to_string()], None)
    }

    /// A server that speaks only TLS (`--port 0 --tls-port`) and requires a client
    /// certificate, with a CA and certificates made for it by `openssl` (Debian package
    /// `openssl`). Connect with [`RedisServer::tls_url`].
    pub fn start_tls() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = make_certificates(dir.path());
        let port = free_port();
        let d = dir.path();
        let path = |name: &str| d.join(name).to_str().expect("utf-8 path").to_owned();
        let (cert, key, ca) = (path("server.pem"), path("server.key"), path("ca.pem"));
        let args = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "yes",
        ];
        Self::launch(dir, port, &args, Some(files))
    }

    fn launch(dir: tempfile::TempDir, port: u16, listen: &[&str], tls: Option<TlsFiles>) -> Self {
        let child = Command::new("redis-server")
            .args(listen)
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--unixsocketperm",
                "700",
                "--dir",
            ])
            .arg(dir.path())
            .arg("--unixsocket")
            .arg(dir.path().join("redis.sock"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        // Started, but maybe not listening yet.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            port,
            dir,
            tls,
        }
    }

    /// `rediss://127.0.0.1:{port}` of a server from [`RedisServer::start_tls`].
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The same server over its Unix socket.
    pub fn socket_url(&self) -> String {
        format!(
            "redis+unix://{}",
            self.dir.path().join("redis.sock").display()
        )
    }

    /// The redis-server process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA,
/// written into `dir` by the `openssl` command.
fn make_certificates(dir: &Path) -> TlsFiles {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl must be installed (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let key = ["-newkey", "rsa:2048", "-nodes", "-keyout"];
    openssl(
        &[
            &["req", "-x509"],
            &key[..],
            &["ca.key", "-out", "ca.pem", "-days", "2"],
            &["-subj", "/CN=recsys test CA"],
        ]
        .concat(),
    );
    // Extensions make them X.509 v3, the only version rustls accepts.
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")
        .expect("write client.ext");
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("write server.ext");
    for (name, subject) in [
        ("server", "/CN=127.0.0.1"),
        ("client", "/CN=recsys test client"),
    ] {
        let (k, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        openssl(&[&["req"], &key[..], &[&k, "-out", &csr, "-subj", subject]].concat());
        let mut sign = vec![
            "x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key",
        ];
        sign.extend(["-CAcreateserial", "-out", &pem, "-days", "2"]);
        let ext = format!("{name}.ext");
        sign.extend(["-extfile", &ext]);
        openssl(&sign);
    }
    TlsFiles {
        ca: dir.join("ca.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
