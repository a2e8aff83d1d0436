//! How a replica keeps its catalog fresh: load the newest valid base snapshot of its
//! generation, then follow the `item-vectors` topic from the offsets the snapshot
//! includes, applying deltas in small batches to a staging copy that is swapped in whole
//! (DESIGN §4). The newest popular list comes from `item-popularity`.
//!
//! The replica is *ready* once it has applied every item-vector message that existed when
//! it started following: `/readyz` answers 503 until then.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use recsys_engine::ids::IdMap;
use recsys_engine::{generations, snapshot};
use recsys_schemas::ItemMeta;
use recsys_schemas::contract::{ItemVectorMessage, POPULAR_KEY, PopularMessage};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::catalog::CatalogHolder;
use crate::{Result, ServingError};

/// The `[follow]` part of serving: where item vectors come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FollowConfig {
    /// Kafka bootstrap servers; empty in the all-in-one process means the trainer's.
    pub brokers: String,
    pub item_vectors_topic: String,
    pub popular_topic: String,
    /// Item metadata, for the categories `category=` filters on; empty: not followed.
    pub items_topic: String,
    /// Directory of base index snapshots; empty: start from an empty index and replay the
    /// whole topic.
    pub snapshot_dir: String,
    /// The models directory of nightly retrains (`models/CURRENT`, `models/g{N}/`);
    /// empty: serve the configured generation only. When set, the replica serves the
    /// current generation, loads its base snapshots from `models/g{N}/snapshots`, and
    /// follows a flip of `CURRENT` once the new generation's snapshot is there: index and
    /// user-key prefix switch together. `snapshot_dir` must then be empty.
    pub models_dir: String,
    /// How often `models/CURRENT` is read.
    pub generation_poll_ms: u64,
    /// A batch is applied when it holds this many changes…
    pub apply_batch: usize,
    /// …or when its oldest change has waited this long.
    pub apply_interval_ms: u64,
}

impl Default for FollowConfig {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            item_vectors_topic: recsys_schemas::contract::ITEM_VECTORS_TOPIC.into(),
            popular_topic: recsys_schemas::contract::POPULAR_TOPIC.into(),
            items_topic: recsys_schemas::contract::ITEMS_TOPIC.into(),
            snapshot_dir: String::new(),
            models_dir: String::new(),
            generation_poll_ms: 1_000,
            apply_batch: 20_000,
            apply_interval_ms: 100,
        }
    }
}

impl FollowConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: &str| {
            Err(ServingError::Config(format!("serving.follow.{key}: {why}")))
        };
        if self.item_vectors_topic.is_empty() {
            return bad("item_vectors_topic", "must not be empty");
        }
        if self.popular_topic.is_empty() || self.popular_topic == self.item_vectors_topic {
            return bad(
                "popular_topic",
                "must be set and differ from item_vectors_topic",
            );
        }
        if !self.models_dir.is_empty() && !self.snapshot_dir.is_empty() {
            return bad(
                "snapshot_dir",
                "must be empty when models_dir is set (snapshots live under models_dir/g{generation}/snapshots)",
            );
        }
        if self.generation_poll_ms == 0 {
            return bad("generation_poll_ms", "must be positive");
        }
        if self.apply_batch == 0 {
            return bad("apply_batch", "must be at least 1");
        }
        if self.apply_interval_ms == 0 {
            return bad("apply_interval_ms", "must be positive");
        }
        Ok(())
    }
}

/// What the follower has done, readable by `/readyz` and the metrics.
#[derive(Debug, Default)]
pub struct FollowStatus {
    ready: AtomicBool,
    /// Item changes (upserts and tombstones) applied.
    pub applied: AtomicU64,
    /// Batches swapped in.
    pub batches: AtomicU64,
    /// Messages that could not be decoded or applied (logged, skipped).
    pub rejected: AtomicU64,
    /// Messages of another model generation (skipped).
    pub other_generation: AtomicU64,
    /// Milliseconds from the trainer publishing the newest applied vector to it being
    /// searchable here; -1 until a vector has been applied.
    pub last_delay_ms: AtomicI64,
    /// Sequence number of the last snapshot loaded (-1: none).
    pub snapshot_seq: AtomicI64,
    /// Generation switches followed (`models/CURRENT` flips).
    pub generation_switches: AtomicU64,
}

impl FollowStatus {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// For processes that fill the catalog some other way (tests, in-process hand-over).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Per followed (topic, partition): the first offset read and the watermark to reach.
type Followed = BTreeMap<(String, i32), (i64, i64)>;

/// Changes collected since the last swap, collapsed to the last change per item so a
/// batch applies exactly as the messages would one by one, in order.
#[derive(Default)]
struct Pending {
    changes: HashMap<String, Option<Vec<f32>>>,
    /// New categories per item (from the `items` topic), last message wins.
    categories: HashMap<String, Vec<String>>,
    /// Per (topic, partition), the offset after the last message taken into this batch.
    next: BTreeMap<(String, i32), i64>,
    oldest: Option<Instant>,
    newest_ts_ms: i64,
}

pub struct ItemFollower {
    cfg: FollowConfig,
    generation: u64,
    catalog: Arc<CatalogHolder>,
    status: Arc<FollowStatus>,
}

impl ItemFollower {
    pub fn new(cfg: FollowConfig, generation: u64, catalog: Arc<CatalogHolder>) -> Result<Self> {
        cfg.validate()?;
        if cfg.brokers.trim().is_empty() {
            return Err(ServingError::Config(
                "serving.follow.brokers: must be set".into(),
            ));
        }
        // With a models directory, the current generation is served from the start.
        let mut generation = generation;
        if !cfg.models_dir.is_empty() {
            let models = Path::new(&cfg.models_dir);
            match generations::current(models) {
                Ok(Some(c)) => generation = c.generation,
                Ok(None) => {}
                Err(e) => {
                    return Err(ServingError::Config(format!(
                        "serving.follow.models_dir: {e}"
                    )));
                }
            }
            if catalog.load().generation != generation {
                catalog.switch(generation, IdMap::new(), None);
            }
        }
        Ok(Self {
            cfg,
            generation,
            catalog,
            status: Arc::new(FollowStatus {
                snapshot_seq: AtomicI64::new(-1),
                last_delay_ms: AtomicI64::new(-1),
                ..FollowStatus::default()
            }),
        })
    }

    pub fn status(&self) -> Arc<FollowStatus> {
        self.status.clone()
    }

    /// Where this generation's base snapshots are.
    fn snapshot_dir(&self) -> Option<PathBuf> {
        if !self.cfg.models_dir.is_empty() {
            Some(generations::snapshot_dir(
                Path::new(&self.cfg.models_dir),
                self.generation,
            ))
        } else if !self.cfg.snapshot_dir.is_empty() {
            Some(PathBuf::from(&self.cfg.snapshot_dir))
        } else {
            None
        }
    }

    /// Loads the newest valid snapshot, if any, and returns the offsets to resume from.
    async fn load_snapshot(&self) -> BTreeMap<i32, i64> {
        let Some(dir) = self.snapshot_dir() else {
            return BTreeMap::new();
        };
        let generation = self.generation;
        let index_cfg = self.catalog.index_config().clone();
        let loaded = tokio::task::spawn_blocking(move || {
            snapshot::load_latest(&dir, generation, None, &index_cfg)
        })
        .await;
        match loaded {
            Ok(Ok(Some(snap))) => {
                let offsets = snap.manifest.offsets.clone();
                info!(
                    path = %snap.path.display(),
                    items = snap.manifest.item_count,
                    ?offsets,
                    "loaded index snapshot"
                );
                self.status
                    .snapshot_seq
                    .store(snap.manifest.seq as i64, Ordering::Relaxed);
                match self.catalog.install(generation, snap.ids, snap.index) {
                    Ok(()) => offsets,
                    Err(e) => {
                        error!(error = %e, "cannot install the snapshot; replaying the topic");
                        BTreeMap::new()
                    }
                }
            }
            Ok(Ok(None)) => {
                info!(dir = %self.snapshot_dir().unwrap_or_default().display(), generation, "no valid index snapshot; replaying the item-vector topic");
                BTreeMap::new()
            }
            Ok(Err(e)) => {
                error!(error = %e, "cannot list index snapshots; replaying the item-vector topic");
                BTreeMap::new()
            }
            Err(e) => {
                error!(error = %e, "snapshot loading task failed; replaying the item-vector topic");
                BTreeMap::new()
            }
        }
    }

    /// Partitions of `topic` and their (low, high) watermarks, waiting for the topic to
    /// exist unless it is `optional` (then one look).
    async fn partitions(
        consumer: &Arc<StreamConsumer>,
        topic: &str,
        optional: bool,
        cancel: &CancellationToken,
    ) -> Option<BTreeMap<i32, (i64, i64)>> {
        loop {
            let c = consumer.clone();
            let t = topic.to_owned();
            let found = tokio::task::spawn_blocking(move || -> rdkafka::error::KafkaResult<_> {
                let timeout = Duration::from_secs(5);
                let md = c.fetch_metadata(Some(&t), timeout)?;
                let mut out = BTreeMap::new();
                for mt in md.topics().iter().filter(|mt| mt.error().is_none()) {
                    for p in mt.partitions() {
                        out.insert(p.id(), c.fetch_watermarks(&t, p.id(), timeout)?);
                    }
                }
                Ok(out)
            })
            .await;
            match found {
                Ok(Ok(p)) if !p.is_empty() => return Some(p),
                _ if optional => {
                    info!(topic, "topic not there; not following it");
                    return None;
                }
                Ok(Ok(_)) => info!(topic, "topic not there yet; waiting"),
                Ok(Err(e)) => warn!(topic, error = %e, "cannot read topic metadata; retrying"),
                Err(e) => warn!(topic, error = %e, "metadata task failed; retrying"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// The partitions to read and where to start: item vectors from `start` (a
    /// snapshot's offsets; the beginning where it has none), item metadata from
    /// `items_from` (the beginning where absent), the popular list's newest message.
    /// Also returns, per followed (topic, partition), the first offset and the watermark
    /// that readiness waits for.
    async fn assignment(
        &self,
        consumer: &Arc<StreamConsumer>,
        start: &BTreeMap<i32, i64>,
        items_from: &BTreeMap<i32, i64>,
        cancel: &CancellationToken,
    ) -> Result<Option<(TopicPartitionList, Followed)>> {
        let kafka = |e: rdkafka::error::KafkaError| ServingError::Internal(format!("kafka: {e}"));
        let topic = &self.cfg.item_vectors_topic;
        let Some(marks) = Self::partitions(consumer, topic, false, cancel).await else {
            return Ok(None);
        };
        let mut tpl = TopicPartitionList::new();
        let mut followed = Followed::new();
        for (&p, &(low, high)) in &marks {
            let offset = start
                .get(&p)
                .map_or(Offset::Beginning, |&o| Offset::Offset(o));
            tpl.add_partition_offset(topic, p, offset).map_err(kafka)?;
            let from = start.get(&p).copied().unwrap_or(low).max(low);
            followed.insert((topic.clone(), p), (from, high));
        }
        // Categories: the whole compacted topic at start (it holds one message per item).
        let items_topic = &self.cfg.items_topic;
        if !items_topic.is_empty()
            && let Some(marks) = Self::partitions(consumer, items_topic, true, cancel).await
        {
            for (&p, &(low, high)) in &marks {
                let offset = items_from
                    .get(&p)
                    .map_or(Offset::Beginning, |&o| Offset::Offset(o));
                tpl.add_partition_offset(items_topic, p, offset)
                    .map_err(kafka)?;
                let from = items_from.get(&p).copied().unwrap_or(low).max(low);
                followed.insert((items_topic.clone(), p), (from, high));
            }
        }
        // The popular list: only the newest message matters.
        let popular = Self::partitions(consumer, &self.cfg.popular_topic, false, cancel).await;
        for &p in popular.iter().flat_map(BTreeMap::keys) {
            tpl.add_partition_offset(&self.cfg.popular_topic, p, Offset::OffsetTail(1))
                .map_err(kafka)?;
        }
        Ok(Some((tpl, followed)))
    }

    /// Follows until `cancel` fires. Never returns an error for a bad message: it is
    /// logged, counted and skipped.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<()> {
        let start = self.load_snapshot().await;
        let kafka = |e: rdkafka::error::KafkaError| ServingError::Internal(format!("kafka: {e}"));
        // No consumer group: every replica reads every partition, from its own offsets.
        let consumer: Arc<StreamConsumer> = Arc::new(
            ClientConfig::new()
                .set("bootstrap.servers", &self.cfg.brokers)
                .set("group.id", format!("recsys-replica-{}", std::process::id()))
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "false")
                .set("auto.offset.reset", "earliest")
                .create()
                .map_err(kafka)?,
        );
        let Some((tpl, followed)) = self
            .assignment(&consumer, &start, &BTreeMap::new(), &cancel)
            .await?
        else {
            return Ok(());
        };
        consumer.assign(&tpl).map_err(kafka)?;
        info!(
            ?followed,
            ?start,
            generation = self.generation,
            "following item vectors"
        );

        // Caught up per partition once the next offset reaches the watermark seen now.
        let mut position: BTreeMap<(String, i32), i64> = followed
            .iter()
            .map(|(k, &(from, _))| (k.clone(), from))
            .collect();
        let caught_up = |position: &BTreeMap<(String, i32), i64>| {
            followed
                .iter()
                .all(|(k, &(_, high))| position.get(k).copied().unwrap_or(0) >= high)
        };
        if caught_up(&position) {
            self.mark_ready();
        }

        let topic = self.cfg.item_vectors_topic.clone();
        let items_topic = self.cfg.items_topic.clone();
        let interval = Duration::from_millis(self.cfg.apply_interval_ms);
        let generation_poll = Duration::from_millis(self.cfg.generation_poll_ms);
        let mut last_poll = Instant::now();
        // A generation CURRENT points at whose snapshot is not there (yet).
        let mut waiting_for: Option<u64> = None;
        let mut pending = Pending::default();
        loop {
            let wait = pending
                .oldest
                .map_or(interval, |t| interval.saturating_sub(t.elapsed()));
            tokio::select! {
                _ = cancel.cancelled() => break,
                received = tokio::time::timeout(wait.max(Duration::from_millis(1)), consumer.recv()) => {
                    match received {
                        Ok(Ok(msg)) => {
                            if msg.topic() == topic {
                                self.take(&msg, &mut pending);
                            } else if msg.topic() == items_topic {
                                self.take_item(&msg, &mut pending);
                            } else {
                                self.popular(&msg);
                            }
                        }
                        Ok(Err(e)) => warn!(error = %e, "kafka receive error; retrying"),
                        Err(_elapsed) => {}
                    }
                }
            }
            let due = pending.oldest.is_some_and(|t| t.elapsed() >= interval);
            if pending.changes.len() + pending.categories.len() >= self.cfg.apply_batch || due {
                self.apply(std::mem::take(&mut pending), &mut position)
                    .await;
                if !self.status.is_ready() && caught_up(&position) {
                    self.mark_ready();
                }
            }
            if !self.cfg.models_dir.is_empty() && last_poll.elapsed() >= generation_poll {
                last_poll = Instant::now();
                if let Some(to) = self.generation_to_follow(&mut waiting_for) {
                    // Changes read so far belong to the old generation's catalog.
                    if !pending.changes.is_empty() || !pending.categories.is_empty() {
                        self.apply(std::mem::take(&mut pending), &mut position)
                            .await;
                    }
                    self.switch(to, &consumer, &mut waiting_for).await?;
                }
            }
        }
        if !pending.changes.is_empty() || !pending.categories.is_empty() {
            self.apply(pending, &mut position).await;
        }
        Ok(())
    }

    /// The generation `models/CURRENT` points at when it is not the one served (and not
    /// one already found incomplete).
    fn generation_to_follow(&self, waiting_for: &mut Option<u64>) -> Option<u64> {
        match generations::current(Path::new(&self.cfg.models_dir)) {
            Ok(Some(c))
                if c.generation != self.generation && *waiting_for != Some(c.generation) =>
            {
                Some(c.generation)
            }
            Ok(_) => None,
            Err(e) => {
                debug!(error = %e, "cannot read the generation pointer; will retry");
                None
            }
        }
    }

    /// Switches the catalog to generation `to` once its base snapshot loads: index, ids
    /// and generation (hence the user-key prefix) change in one swap. The item-vector
    /// partitions are then re-read from the snapshot's offsets (the beginning where it
    /// has none), keeping that generation's messages; item metadata and the popular list
    /// continue where they were. A generation without a loadable snapshot is not switched to: the replica
    /// keeps serving the old one and retries when `CURRENT` changes again.
    async fn switch(
        &mut self,
        to: u64,
        consumer: &Arc<StreamConsumer>,
        waiting_for: &mut Option<u64>,
    ) -> Result<()> {
        let dir = generations::snapshot_dir(Path::new(&self.cfg.models_dir), to);
        let index_cfg = self.catalog.index_config().clone();
        let loaded =
            tokio::task::spawn_blocking(move || snapshot::load_latest(&dir, to, None, &index_cfg))
                .await
                .map_err(|e| ServingError::Internal(format!("snapshot task: {e}")))?;
        let snap = match loaded {
            Ok(Some(snap)) => snap,
            Ok(None) => {
                warn!(
                    generation = to,
                    serving = self.generation,
                    "CURRENT points at a generation without a base snapshot; not switching"
                );
                *waiting_for = Some(to);
                return Ok(());
            }
            Err(e) => {
                warn!(generation = to, error = %e, "cannot list the new generation's snapshots; not switching");
                *waiting_for = Some(to);
                return Ok(());
            }
        };
        let from = self.generation;
        let start = snap.manifest.offsets.clone();
        self.status
            .snapshot_seq
            .store(snap.manifest.seq as i64, Ordering::Relaxed);
        self.catalog.switch(to, snap.ids, Some(snap.index));
        self.generation = to;
        *waiting_for = None;
        self.status
            .generation_switches
            .fetch_add(1, Ordering::Relaxed);
        // Seek rather than re-assign: item metadata and the popular list keep their
        // positions, and librdkafka need not stop and restart every partition.
        let topic = self.cfg.item_vectors_topic.clone();
        let partitions: Vec<i32> = consumer
            .assignment()
            .map_err(|e| ServingError::Internal(format!("kafka: {e}")))?
            .elements_for_topic(&topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        for p in partitions {
            let offset = start
                .get(&p)
                .map_or(Offset::Beginning, |&o| Offset::Offset(o));
            let mut attempt = 0;
            while let Err(e) = consumer.seek(&topic, p, offset, Duration::from_secs(5)) {
                attempt += 1;
                if attempt == 5 {
                    error!(partition = p, error = %e, "cannot re-read the item-vector partition; the new generation's earlier vectors stay missing until they change again");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        info!(
            from,
            to,
            items = snap.manifest.item_count,
            ?start,
            "switched generation"
        );
        Ok(())
    }

    fn mark_ready(&self) {
        if !self.status.is_ready() {
            info!(
                items = self.catalog.load().item_count(),
                "caught up with the item-vector topic; ready"
            );
        }
        self.status.set_ready();
    }

    /// Adds one item-metadata message's categories to the batch. Invalid ones were already
    /// dead-lettered by the trainer: here they are counted and skipped.
    fn take_item(&self, msg: &BorrowedMessage<'_>, pending: &mut Pending) {
        pending
            .next
            .insert((msg.topic().to_owned(), msg.partition()), msg.offset() + 1);
        pending.oldest.get_or_insert_with(Instant::now);
        match msg.payload().map(|p| ItemMeta::from_json(p, 0)) {
            Some(Ok(meta)) => {
                pending.categories.insert(meta.item_id, meta.categories);
            }
            Some(Err(_)) | None => {
                self.status.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Adds one item-vector message to the batch.
    fn take(&self, msg: &BorrowedMessage<'_>, pending: &mut Pending) {
        pending
            .next
            .insert((msg.topic().to_owned(), msg.partition()), msg.offset() + 1);
        pending.oldest.get_or_insert_with(Instant::now);
        let Some(key) = msg.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            self.status.rejected.fetch_add(1, Ordering::Relaxed);
            warn!(
                partition = msg.partition(),
                offset = msg.offset(),
                "item-vector message without a UTF-8 key; skipped"
            );
            return;
        };
        let change = match msg.payload() {
            None | Some([]) => None,
            Some(bytes) => match ItemVectorMessage::decode(bytes) {
                Ok(m) if m.generation != self.generation => {
                    self.status.other_generation.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(m) => {
                    pending.newest_ts_ms = pending.newest_ts_ms.max(m.ts_ms);
                    Some(m.vector)
                }
                Err(e) => {
                    self.status.rejected.fetch_add(1, Ordering::Relaxed);
                    warn!(
                        item = key,
                        partition = msg.partition(),
                        offset = msg.offset(),
                        error = %e,
                        "bad item-vector message; skipped"
                    );
                    return;
                }
            },
        };
        pending.changes.insert(key.to_owned(), change);
    }

    /// Swaps one batch in; on failure the batch is logged and dropped (the next snapshot
    /// or the next change of those items repairs it) and the replica keeps serving.
    async fn apply(&self, pending: Pending, position: &mut BTreeMap<(String, i32), i64>) {
        if !pending.categories.is_empty() {
            let changes = pending.categories.into_iter().collect();
            if let Err(e) = self.catalog.set_categories(self.generation, changes) {
                error!(error = %e, "item categories not applied");
            }
        }
        let count = pending.changes.len() as u64;
        let mut upserts = Vec::new();
        let mut removes = Vec::new();
        for (item, change) in pending.changes {
            match change {
                Some(v) => upserts.push((item, v)),
                None => removes.push(item),
            }
        }
        let catalog = self.catalog.clone();
        let generation = self.generation;
        let result =
            tokio::task::spawn_blocking(move || catalog.apply_deltas(generation, upserts, removes))
                .await;
        match result {
            Ok(Ok(())) => {
                self.status.applied.fetch_add(count, Ordering::Relaxed);
                self.status.batches.fetch_add(1, Ordering::Relaxed);
                if pending.newest_ts_ms > 0 {
                    self.status
                        .last_delay_ms
                        .store(now_ms() - pending.newest_ts_ms, Ordering::Relaxed);
                }
            }
            Ok(Err(e)) => {
                self.status.rejected.fetch_add(count, Ordering::Relaxed);
                error!(error = %e, changes = count, "item-vector batch rejected; still serving the previous index");
            }
            Err(e) => {
                self.status.rejected.fetch_add(count, Ordering::Relaxed);
                error!(error = %e, "item-vector apply task failed");
            }
        }
        position.extend(pending.next);
    }

    fn popular(&self, msg: &BorrowedMessage<'_>) {
        if msg.key() != Some(POPULAR_KEY.as_bytes()) {
            return;
        }
        let parsed = msg.payload().map(serde_json::from_slice::<PopularMessage>);
        match parsed {
            Some(Ok(m)) if m.generation == self.generation => {
                if let Err(e) = self.catalog.set_popular(m.generation, m.items) {
                    warn!(error = %e, "popular list not applied");
                }
            }
            Some(Ok(_)) => {
                self.status.other_generation.fetch_add(1, Ordering::Relaxed);
            }
            Some(Err(e)) => {
                self.status.rejected.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "bad popular-list message; skipped");
            }
            None => {}
        }
    }
}
