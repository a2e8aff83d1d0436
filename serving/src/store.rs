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

/// Reads `u:{gen}:{user}` and `h:{user}` in one round trip.
pub struct RedisUserVectorStore {
    conn: ConnectionManager,
    timeout: std::time::Duration,
}

impl RedisUserVectorStore {
    /// Connects (waiting at most 5 s); every later call gives up after `timeout`.
    pub async fn connect(url: &str, timeout: std::time::Duration) -> Result<Self, StoreError> {
        let client =
            redis::Client::open(url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let conn = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            ConnectionManager::new(client),
        )
        .await
        .map_err(|_| StoreError::Unavailable(format!("connecting to {url} timed out")))?
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self { conn, timeout })
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
        let mut conn = self.conn.clone();
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
