//! Read half of the user-vector store: a user's vector in a generation and their recent
//! items. Redis in production, the engine's in-memory store in the all-in-one mode.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use recsys_engine::store::{MemoryUserStore, UserRecord};
use recsys_schemas::contract::{decode_vector, user_history_key, user_vector_key};
use redis::aio::MultiplexedConnection;

/// Why a lookup failed; every variant is served from a fallback, never as a 5xx.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unreachable: {0}")]
    Unavailable(String),
    #[error("stored vector is corrupt: {0}")]
    Corrupt(String),
}

#[async_trait]
pub trait UserVectorStore: Send + Sync {
    /// The user's vector in `generation` (if any) and recent items (newest first, at most
    /// `max_recent`).
    async fn get(
        &self,
        generation: u64,
        user_id: &str,
        max_recent: usize,
    ) -> Result<UserRecord, StoreError>;
}

/// Reads `u:{gen}:{user}` and `h:{user}` in one round trip over a multiplexed connection
/// of the calling thread's own.
///
/// Each thread that looks users up (an HTTP worker, in practice) opens its own connection
/// on first use, so the connection's I/O runs on that worker's event loop: a lookup never
/// crosses threads. With a shared pool the Redis driver ran on another thread, and every
/// lookup cost two cross-thread wake-ups, which on a 2-core machine at 5,000 req/s were a
/// visible share of the CPU. A connection that fails is dropped; the thread reconnects on
/// a later lookup, at most once per `RECONNECT_AFTER`, and answers "unavailable" (a
/// fallback, never a 5xx) in between without waiting. A thread's connections live as long
/// as the thread (a dropped store leaves its idle connection there until then); the driver
/// task of each runs on the event loop that opened it, so a thread must keep one event
/// loop for its lookups, as actix workers and tokio workers do.
pub struct RedisUserVectorStore {
    client: redis::Client,
    /// Tells this store's connections from other stores' in the thread-local map.
    key: u64,
    timeout: Duration,
}

/// How long a thread waits after a failed connection before it tries again.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// A client whose connections send every command at once (`TCP_NODELAY`). redis-rs
/// leaves Nagle's algorithm on by default, and a worker's connection carries the lookups
/// of all its concurrent requests: with Nagle, a lookup written while an earlier one
/// is unanswered waits in the kernel for that answer.
fn client_without_nagle(url: &str) -> redis::RedisResult<redis::Client> {
    use redis::IntoConnectionInfo;
    let info = url.into_connection_info()?;
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    redis::Client::open(info.set_tcp_settings(tcp))
}

enum Slot {
    Up(MultiplexedConnection),
    Down(Instant),
}

thread_local! {
    static CONNECTIONS: RefCell<HashMap<u64, Slot>> = RefCell::new(HashMap::new());
}

impl RedisUserVectorStore {
    /// Checks that `url` answers (waiting at most 5 s); every later call gives up after
    /// `timeout`.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        static NEXT_KEY: AtomicU64 = AtomicU64::new(0);
        let client =
            client_without_nagle(url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        tokio::time::timeout(
            Duration::from_secs(5),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| StoreError::Unavailable(format!("connecting to {url} timed out")))?
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self {
            client,
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            timeout,
        })
    }

    fn set_slot(&self, slot: Slot) {
        CONNECTIONS.with(|c| c.borrow_mut().insert(self.key, slot));
    }

    /// This thread's connection, opened if there is none (within the call timeout).
    async fn conn(&self) -> Result<MultiplexedConnection, StoreError> {
        let slot = CONNECTIONS.with(|c| match c.borrow().get(&self.key) {
            Some(Slot::Up(conn)) => Some(Ok(conn.clone())),
            Some(Slot::Down(at)) => Some(Err(*at)),
            None => None,
        });
        match slot {
            Some(Ok(conn)) => return Ok(conn),
            Some(Err(at)) if at.elapsed() < RECONNECT_AFTER => {
                return Err(StoreError::Unavailable(
                    "redis unreachable; reconnecting shortly".into(),
                ));
            }
            _ => {}
        }
        let opened =
            tokio::time::timeout(self.timeout, self.client.get_multiplexed_async_connection())
                .await;
        match opened {
            Ok(Ok(conn)) => {
                self.set_slot(Slot::Up(conn.clone()));
                Ok(conn)
            }
            Ok(Err(e)) => {
                self.set_slot(Slot::Down(Instant::now()));
                Err(StoreError::Unavailable(e.to_string()))
            }
            Err(_) => {
                self.set_slot(Slot::Down(Instant::now()));
                Err(StoreError::Unavailable(
                    "connecting to redis timed out".into(),
                ))
            }
        }
    }
}

#[async_trait]
impl UserVectorStore for RedisUserVectorStore {
    async fn get(
        &self,
        generation: u64,
        user_id: &str,
        max_recent: usize,
    ) -> Result<UserRecord, StoreError> {
        let started = Instant::now();
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        pipe.get(user_vector_key(generation, user_id)).lrange(
            user_history_key(user_id),
            0,
            max_recent as isize - 1,
        );
        let left = self.timeout.saturating_sub(started.elapsed());
        let (vector, recent): (Option<Vec<u8>>, Vec<String>) =
            match tokio::time::timeout(left, pipe.query_async(&mut conn)).await {
                Err(_) => return Err(StoreError::Unavailable("redis call timed out".into())),
                Ok(Err(e)) => {
                    // A broken connection is replaced on a later call; a reply error
                    // (say, a key of the wrong type) leaves it be.
                    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
                        self.set_slot(Slot::Down(Instant::now()));
                    }
                    return Err(StoreError::Unavailable(e.to_string()));
                }
                Ok(Ok(reply)) => reply,
            };
        let vector = match vector {
            None => None,
            Some(bytes) => Some(decode_vector(&bytes).ok_or_else(|| {
                StoreError::Corrupt(format!(
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
    async fn get(
        &self,
        generation: u64,
        user_id: &str,
        max_recent: usize,
    ) -> Result<UserRecord, StoreError> {
        let mut record = MemoryUserStore::get(self, generation, user_id);
        record.recent.truncate(max_recent);
        Ok(record)
    }
}

#[async_trait]
impl<T: UserVectorStore + ?Sized> UserVectorStore for Arc<T> {
    async fn get(
        &self,
        generation: u64,
        user_id: &str,
        max_recent: usize,
    ) -> Result<UserRecord, StoreError> {
        (**self).get(generation, user_id, max_recent).await
    }
}
