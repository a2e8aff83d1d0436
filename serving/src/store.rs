//! Read half of the user-vector store: a user's vector in a generation and their recent
//! items. Redis in production, the engine's in-memory store in the all-in-one mode.

use std::sync::Arc;

use async_trait::async_trait;
use recsys_engine::store::{MemoryUserStore, UserRecord};
use recsys_schemas::contract::{decode_vector, user_history_key, user_vector_key};
use redis::aio::ConnectionManager;

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

/// Reads `u:{gen}:{user}` and `h:{user}` in one round trip, over a small pool of
/// multiplexed connections taken in turn (each reconnects by itself after a failure).
pub struct RedisUserVectorStore {
    conns: Vec<ConnectionManager>,
    next: std::sync::atomic::AtomicUsize,
    timeout: std::time::Duration,
}

impl RedisUserVectorStore {
    /// One connection (waiting at most 5 s to connect); every later call gives up after
    /// `timeout`.
    pub async fn connect(url: &str, timeout: std::time::Duration) -> Result<Self, StoreError> {
        Self::connect_pool(url, timeout, 1).await
    }

    /// `connections` connections (at least one), used in turn.
    pub async fn connect_pool(
        url: &str,
        timeout: std::time::Duration,
        connections: usize,
    ) -> Result<Self, StoreError> {
        let client =
            redis::Client::open(url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let mut conns = Vec::with_capacity(connections.max(1));
        for _ in 0..connections.max(1) {
            let conn = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                ConnectionManager::new(client.clone()),
            )
            .await
            .map_err(|_| StoreError::Unavailable(format!("connecting to {url} timed out")))?
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            conns.push(conn);
        }
        Ok(Self {
            conns,
            next: std::sync::atomic::AtomicUsize::new(0),
            timeout,
        })
    }

    fn conn(&self) -> ConnectionManager {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.conns[n % self.conns.len()].clone()
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
        let mut conn = self.conn();
        let mut pipe = redis::pipe();
        pipe.get(user_vector_key(generation, user_id)).lrange(
            user_history_key(user_id),
            0,
            max_recent as isize - 1,
        );
        let (vector, recent): (Option<Vec<u8>>, Vec<String>) =
            tokio::time::timeout(self.timeout, pipe.query_async(&mut conn))
                .await
                .map_err(|_| StoreError::Unavailable("redis call timed out".into()))?
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
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
