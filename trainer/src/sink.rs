//! Where the trainer publishes: user vectors and histories (Redis, or the in-memory store
//! in the all-in-one mode) and item vectors and popularity (handed to serving). The trainer
//! owns these write halves; serving owns the read halves.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use recsys_engine::store::MemoryUserStore;
use recsys_schemas::contract::{encode_vector, user_history_key, user_vector_key};
use redis::aio::ConnectionManager;

use crate::{Result, TrainerError};

/// A user's fresh vector and the items they interacted with since the last publish.
#[derive(Debug, Clone, PartialEq)]
pub struct UserUpdate {
    pub user_id: String,
    pub vector: Vec<f32>,
    /// Oldest first.
    pub new_items: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ItemUpdate {
    pub item_id: String,
    pub vector: Vec<f32>,
}

/// Write half of the user-vector store.
#[async_trait]
pub trait UserVectorSink: Send + Sync {
    async fn publish(&self, generation: u64, updates: &[UserUpdate]) -> Result<()>;
}

/// Receiver of item vectors and the popularity ranking.
#[async_trait]
pub trait ItemVectorSink: Send + Sync {
    async fn publish_items(&self, generation: u64, updates: Vec<ItemUpdate>) -> Result<()>;
    /// Most popular items first, with decayed scores.
    async fn publish_popular(&self, generation: u64, items: Vec<(String, f32)>) -> Result<()>;
}

/// Redis: `SET u:{gen}:{user}` (little-endian f32, with a TTL) and a capped list
/// `h:{user}` of recent items, written in one pipeline per publish.
pub struct RedisUserVectorSink {
    conn: ConnectionManager,
    ttl_s: u64,
    history_len: usize,
    timeout: Duration,
}

impl RedisUserVectorSink {
    pub async fn connect(url: &str, ttl_s: u64, history_len: usize) -> Result<Self> {
        let client = redis::Client::open(url)?;
        let conn = tokio::time::timeout(Duration::from_secs(5), ConnectionManager::new(client))
            .await
            .map_err(|_| TrainerError::Store(format!("connecting to {url} timed out")))??;
        Ok(Self {
            conn,
            ttl_s,
            history_len,
            timeout: Duration::from_secs(5),
        })
    }
}

#[async_trait]
impl UserVectorSink for RedisUserVectorSink {
    async fn publish(&self, generation: u64, updates: &[UserUpdate]) -> Result<()> {
        // Large publishes go in chunks so one pipeline stays a bounded request.
        for chunk in updates.chunks(1_000) {
            let mut pipe = redis::pipe();
            for u in chunk {
                pipe.set_ex(
                    user_vector_key(generation, &u.user_id),
                    encode_vector(&u.vector),
                    self.ttl_s,
                )
                .ignore();
                if !u.new_items.is_empty() {
                    let key = user_history_key(&u.user_id);
                    pipe.lpush(&key, &u.new_items).ignore();
                    pipe.ltrim(&key, 0, self.history_len as isize - 1).ignore();
                }
            }
            let mut conn = self.conn.clone();
            tokio::time::timeout(self.timeout, pipe.query_async::<()>(&mut conn))
                .await
                .map_err(|_| TrainerError::Store("redis publish timed out".into()))??;
        }
        Ok(())
    }
}

/// The in-memory twin, shared with serving in the all-in-one mode.
pub struct MemoryUserVectorSink {
    pub store: Arc<MemoryUserStore>,
    pub history_len: usize,
}

#[async_trait]
impl UserVectorSink for MemoryUserVectorSink {
    async fn publish(&self, generation: u64, updates: &[UserUpdate]) -> Result<()> {
        for u in updates {
            self.store
                .put_vector(generation, &u.user_id, u.vector.clone());
            self.store
                .push_history(&u.user_id, &u.new_items, self.history_len);
        }
        Ok(())
    }
}
