//! A real Kafka-protocol broker for the tests and benchmarks: `tansu` on a free loopback
//! port with in-memory storage, stopped on drop.
//!
//! tansu is AGPL-licensed, so recsys never links it: it runs as a separate binary,
//! installed with `cargo install` into a cache outside the clone (`$RECSYS_TANSU` names a
//! binary to use instead). The first install builds it from source (about 16 minutes on
//! two cores); later runs find it in the cache.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::redis_server::free_port;

/// The tansu release the tests run against, and the feature its memory engine needs.
pub const TANSU_VERSION: &str = "0.6.0";
const TANSU_FEATURES: &str = "dynostore";

/// Where `cargo install` puts tansu: `$RECSYS_CACHE` (default `~/.cache/recsys`)`/tansu`.
fn install_root() -> PathBuf {
    let cache = std::env::var_os("RECSYS_CACHE").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
            Path::new(&home).join(".cache/recsys")
        },
        PathBuf::from,
    );
    cache.join(format!("tansu-{TANSU_VERSION}"))
}

/// The tansu binary, installed first if missing. Concurrent callers (test binaries run in
/// parallel) wait for one install under a file lock.
pub fn tansu_binary() -> anyhow::Result<PathBuf> {
    if let Some(given) = std::env::var_os("RECSYS_TANSU") {
        return Ok(PathBuf::from(given));
    }
    let root = install_root();
    let binary = root.join("bin/tansu");
    if binary.exists() {
        return Ok(binary);
    }
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let lock = std::fs::File::create(root.join(".install.lock"))?;
    lock.lock()?;
    if binary.exists() {
        return Ok(binary);
    }
    eprintln!(
        "installing tansu {TANSU_VERSION} into {} (a one-time build of ~16 minutes)",
        root.display()
    );
    let target = root.join("target");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["install", "tansu", "--locked", "--version", TANSU_VERSION])
        .args(["--features", TANSU_FEATURES, "--root"])
        .arg(&root)
        // A build of its own: not our workspace's target directory, compiler wrapper or
        // lints.
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS")
        .env_remove("RUSTFLAGS")
        .stdout(Stdio::null())
        .status()
        .context("running cargo install tansu")?;
    if !status.success() || !binary.exists() {
        bail!("cargo install tansu {TANSU_VERSION} failed ({status})");
    }
    // The build tree is large and no longer needed.
    let _ = std::fs::remove_dir_all(&target);
    Ok(binary)
}

pub struct TansuServer {
    child: Child,
    pub port: u16,
}

impl TansuServer {
    /// Starts a memory-backed broker on a free loopback port and waits until it listens.
    /// Topics are not created on first use: create them (the admin API) before use.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_on(free_port())
    }

    /// The same on `port`.
    pub fn start_on(port: u16) -> anyhow::Result<Self> {
        let binary = tansu_binary()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let mut child = Command::new(&binary)
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/", "--silent"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait()? {
                bail!("tansu exited at start-up ({status})");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("tansu did not listen on {port} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self { child, port })
    }

    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the broker (as a crash would: its in-memory topics are lost).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TansuServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
