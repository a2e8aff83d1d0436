//! Where the trainer publishes: user vectors and histories (Redis, or the in-memory store
//! in the all-in-one mode) and item vectors and popularity (handed to serving). The trainer
//! owns these write halves; serving owns the read halves.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use recsys_index::store::{MemoryUserStore, distinct_newest_last};
use recsys_schemas::config::TlsPem;
use recsys_schemas::contract::{
    ItemVectorMessage, POPULAR_KEY, PopularMessage, encode_vector, user_history_key,
    user_vector_key,
};
use recsys_schemas::{KafkaClient, KafkaConfig};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::warn;

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
    /// Removes items (hidden ones) from every replica's index.
    async fn remove_items(&self, item_ids: Vec<String>) -> Result<()>;
    /// Most popular items first, with decayed scores.
    async fn publish_popular(&self, generation: u64, items: Vec<(String, f32)>) -> Result<()>;
    /// Where a replica resumes after a base snapshot taken now: the next offset per
    /// partition of the item-vector topic. Everything published before the call lies
    /// below it. Empty when vectors are handed over in process.
    async fn end_offsets(&self) -> Result<BTreeMap<i32, i64>> {
        Ok(BTreeMap::new())
    }
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
        Self::connect_tls(url, &TlsPem::default(), ttl_s, history_len).await
    }

    /// The same, where a `rediss://` URL trusts `tls.ca` instead of the system's roots and
    /// presents `tls.client` when set.
    pub async fn connect_tls(
        url: &str,
        tls: &TlsPem,
        ttl_s: u64,
        history_len: usize,
    ) -> Result<Self> {
        // Nagle off, as for serving's reads: a small publish is not held behind the last.
        let client = {
            use redis::IntoConnectionInfo;
            let info = url.into_connection_info()?;
            let tcp = info.tcp_settings().clone().set_nodelay(true);
            let info = info.set_tcp_settings(tcp);
            if tls.ca.is_none() && tls.client.is_none() {
                redis::Client::open(info)?
            } else {
                let certs = redis::TlsCertificates {
                    client_tls: tls.client.clone().map(|(client_cert, client_key)| {
                        redis::ClientTlsConfig {
                            client_cert,
                            client_key,
                        }
                    }),
                    root_cert: tls.ca.clone(),
                };
                redis::Client::build_with_tls(info, certs)?
            }
        };
        let timeout = Duration::from_secs(5);
        // One budget per publish, ours: redis-rs's own default (500 ms per reply) cut
        // a pipeline of 1,000 users with 500 history items each short.
        let config = ConnectionManagerConfig::new().set_response_timeout(None);
        let conn = match tokio::time::timeout(
            Duration::from_secs(5),
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        {
            Ok(conn) => conn?,
            Err(_) => {
                // The manager retries without end; one plain attempt says why.
                let attempt = client.get_multiplexed_async_connection();
                let why = match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer".to_owned(),
                };
                return Err(TrainerError::Store(format!(
                    "connecting to {url} timed out: {why}"
                )));
            }
        };
        Ok(Self {
            conn,
            ttl_s,
            history_len,
            timeout,
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
                    // The history holds each item once: move repeats to the front.
                    let key = user_history_key(&u.user_id);
                    let fresh = distinct_newest_last(&u.new_items);
                    for item in &fresh {
                        pipe.lrem(&key, 0, *item).ignore();
                    }
                    pipe.lpush(&key, &fresh).ignore();
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

/// Item vectors to the compacted `item-vectors` topic (key = item id) and the popular
/// list to `item-popularity`, for serving replicas in other processes. Every publish
/// waits for the broker's acknowledgement of each message, so a publish that returns
/// `Ok` is durable and a failed one is retried whole by the caller.
pub struct KafkaItemVectorSink {
    /// Replaced by a fresh one after a fatal error or a timed-out send (see
    /// [`Self::producer`]).
    producer: Mutex<FutureProducer>,
    config: ClientConfig,
    /// A send timed out: the next one starts on a new producer.
    stale: AtomicBool,
    topic: String,
    popular_topic: String,
    timeout: Duration,
}

impl KafkaItemVectorSink {
    pub fn new(
        kafka: &KafkaConfig,
        brokers: &str,
        topic: &str,
        popular_topic: &str,
    ) -> Result<Self> {
        let config: ClientConfig = kafka
            .properties(KafkaClient::ItemVectorProducer, brokers, None)
            .into_iter()
            .collect();
        Ok(Self {
            producer: Mutex::new(config.create()?),
            config,
            stale: AtomicBool::new(false),
            topic: topic.to_owned(),
            popular_topic: popular_topic.to_owned(),
            timeout: Duration::from_secs(15),
        })
    }

    /// The producer, made anew if the current one failed fatally or its last send timed
    /// out. An idempotent producer can be stuck for good once the broker no longer knows
    /// its producer id (a broker that lost its state, the id's expiry): every later send
    /// fails, fatally or by timing out. Everything it had in flight has failed by then,
    /// and the caller retries the whole publish, so order per key is kept.
    fn producer(&self) -> Result<FutureProducer> {
        let mut producer = self.producer.lock().unwrap_or_else(|p| p.into_inner());
        let stale = self.stale.swap(false, Ordering::Relaxed);
        if let Some((code, reason)) = producer.client().fatal_error() {
            warn!(%code, %reason, "item-vector producer failed fatally; making a new one");
            *producer = self.config.create()?;
        } else if stale {
            warn!("item-vector producer timed out; making a new one");
            *producer = self.config.create()?;
        }
        Ok(producer.clone())
    }

    /// Enqueues `(key, payload)` messages (a `None` payload is a tombstone) and waits for
    /// every acknowledgement.
    async fn send_all(&self, topic: &str, messages: Vec<(String, Option<Vec<u8>>)>) -> Result<()> {
        let producer = self.producer()?;
        let mut pending = Vec::with_capacity(messages.len());
        for (key, payload) in &messages {
            let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key(key);
            if let Some(p) = payload {
                record = record.payload(p);
            }
            let mut record = Some(record);
            let deadline = tokio::time::Instant::now() + self.timeout;
            while let Some(r) = record.take() {
                match producer.send_result(r) {
                    Ok(delivery) => pending.push(delivery),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                        if tokio::time::Instant::now() < deadline =>
                    {
                        // The local queue is full: let deliveries drain, then retry.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        record = Some(r);
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
        let deliveries = tokio::time::timeout(self.timeout, futures::future::join_all(pending))
            .await
            .map_err(|_| {
                self.stale.store(true, Ordering::Relaxed);
                TrainerError::Store(format!("{topic}: deliveries timed out"))
            })?;
        for d in deliveries {
            match d {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    if matches!(
                        e,
                        KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)
                    ) {
                        self.stale.store(true, Ordering::Relaxed);
                    }
                    return Err(e.into());
                }
                Err(_) => return Err(TrainerError::Store(format!("{topic}: producer closed"))),
            }
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[async_trait]
impl ItemVectorSink for KafkaItemVectorSink {
    async fn publish_items(&self, generation: u64, updates: Vec<ItemUpdate>) -> Result<()> {
        let ts_ms = now_ms();
        let messages = updates
            .into_iter()
            .map(|u| {
                let payload = ItemVectorMessage {
                    generation,
                    ts_ms,
                    vector: u.vector,
                }
                .encode();
                (u.item_id, Some(payload))
            })
            .collect();
        self.send_all(&self.topic, messages).await
    }

    /// Tombstones (null values), which compaction eventually turns into absence.
    async fn remove_items(&self, item_ids: Vec<String>) -> Result<()> {
        self.send_all(
            &self.topic,
            item_ids.into_iter().map(|id| (id, None)).collect(),
        )
        .await
    }

    async fn publish_popular(&self, generation: u64, items: Vec<(String, f32)>) -> Result<()> {
        let payload = serde_json::to_vec(&PopularMessage {
            generation,
            ts_ms: now_ms(),
            items,
        })
        .map_err(|e| TrainerError::Task(e.to_string()))?;
        self.send_all(
            &self.popular_topic,
            vec![(POPULAR_KEY.to_owned(), Some(payload))],
        )
        .await
    }

    async fn end_offsets(&self) -> Result<BTreeMap<i32, i64>> {
        let client = self.producer()?;
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || -> Result<BTreeMap<i32, i64>> {
            let timeout = Duration::from_secs(10);
            let md = client.client().fetch_metadata(Some(&topic), timeout)?;
            let mut out = BTreeMap::new();
            for t in md.topics() {
                for p in t.partitions() {
                    let (_, high) = client.client().fetch_watermarks(&topic, p.id(), timeout)?;
                    out.insert(p.id(), high);
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| TrainerError::Task(e.to_string()))?
    }
}
