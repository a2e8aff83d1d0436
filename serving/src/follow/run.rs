//! The follower's loop: the snapshot loaded, the topics assigned from its offsets, batches
//! applied, readiness, the generation pointer polled.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use recsys_index::snapshot;
use recsys_schemas::KafkaClient;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::batch::Pending;
use super::follower::{Followed, ItemFollower};
use crate::{Result, ServingError};

impl ItemFollower {
    /// Loads the newest valid snapshot, if any, and returns the offsets to resume from.
    pub(super) async fn load_snapshot(&self) -> BTreeMap<i32, i64> {
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
                    Ok(()) => {
                        self.status.dropped.store(0, Ordering::Relaxed);
                        offsets
                    }
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
    pub(super) async fn partitions(
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
    pub(super) async fn assignment(
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
            self.kafka
                .properties(
                    KafkaClient::ReplicaConsumer,
                    &self.cfg.brokers,
                    Some(&format!("recsys-replica-{}", std::process::id())),
                )
                .into_iter()
                .collect::<ClientConfig>()
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
}
