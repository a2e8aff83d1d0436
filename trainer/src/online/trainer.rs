//! The online trainer and its loop: consume `events` (and `items`), micro-batch, train a
//! step on a blocking thread, publish changed vectors every `publish_interval`, expire
//! ids, write snapshots and checkpoints, follow generation switches.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use recsys_engine::model::Model;
use recsys_index::IndexConfig;
use recsys_schemas::{Event, EventLimits, KafkaClient, KafkaConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::health::now_ms;
use super::ingest::{parse, parse_item, reject};
use super::learner::{Applied, Learner};
use super::progress::{Progress, Received, ResumeContext};
use super::stats::TrainerStats;
use crate::sink::{ItemVectorSink, UserVectorSink};
use crate::{Result, TrainerConfig, TrainerError};

/// The online trainer: owns the model while it runs and gives it back when stopped.
pub struct OnlineTrainer {
    pub(super) cfg: TrainerConfig,
    /// The `[kafka]` table, for the consumer and the dead-letter producer.
    pub(super) kafka: KafkaConfig,
    /// The model and what goes with it; taken while a step runs on a blocking thread.
    pub(super) learner: Option<Learner>,
    pub(super) users: Arc<dyn UserVectorSink>,
    pub(super) items: Arc<dyn ItemVectorSink>,
    pub(super) stats: Arc<TrainerStats>,
    /// How snapshot indexes are built (`trainer.snapshot_dir` turns snapshots on).
    pub(super) index_cfg: IndexConfig,
    /// The bounds on an event's weight and time (`[events]`).
    pub(super) limits: EventLimits,
    pub(super) progress: Progress,
    /// When the first event of the batch being filled arrived.
    pub(super) batch_arrived: Option<Instant>,
    /// When the first event trained on but not yet published arrived.
    pub(super) unpublished_since: Option<Instant>,
}

pub(super) type SnapshotTask = JoinHandle<Result<PathBuf>>;

/// How often the trainer looks for expired ids (when `trainer.expire_after_s` is set).
const EXPIRY_INTERVAL: Duration = Duration::from_secs(30);

impl OnlineTrainer {
    pub fn new(
        cfg: TrainerConfig,
        kafka: KafkaConfig,
        model: Model,
        users: Arc<dyn UserVectorSink>,
        items: Arc<dyn ItemVectorSink>,
    ) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            learner: Some(Learner::new(&cfg, model)),
            cfg,
            kafka,
            users,
            items,
            stats: Arc::new(TrainerStats::default()),
            index_cfg: IndexConfig::default(),
            limits: EventLimits::default(),
            progress: Progress::default(),
            batch_arrived: None,
            unpublished_since: None,
        })
    }

    /// How the indexes of base snapshots are built (the serving side's `[index]`).
    pub fn with_index_config(mut self, index_cfg: IndexConfig) -> Self {
        self.index_cfg = index_cfg;
        self
    }

    /// The bounds on an event's weight and time (`[events]`; replays of history need
    /// [`EventLimits::replay`]).
    pub fn with_event_limits(mut self, limits: EventLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn stats(&self) -> Arc<TrainerStats> {
        self.stats.clone()
    }

    /// One of the trainer's Kafka clients, configured.
    fn client(&self, client: KafkaClient, group_id: Option<&str>) -> ClientConfig {
        self.kafka
            .properties(client, &self.cfg.brokers, group_id)
            .into_iter()
            .collect()
    }

    pub(super) fn learner(&self) -> Result<&Learner> {
        self.learner
            .as_ref()
            .ok_or_else(|| TrainerError::Task("model lost".into()))
    }

    pub(super) fn learner_mut(&mut self) -> Result<&mut Learner> {
        self.learner
            .as_mut()
            .ok_or_else(|| TrainerError::Task("model lost".into()))
    }

    /// Consumes until `cancel` fires, then trains what is buffered, publishes, and returns
    /// the model.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<Model> {
        self.enter_models_dir()?;
        self.restore().await?;
        let mut last_expiry = Instant::now();
        let context = ResumeContext {
            topic: self.cfg.topic.clone(),
            resume: self.progress.resume.clone(),
            stats: self.stats.clone(),
        };
        let consumer: StreamConsumer<ResumeContext> = self
            .client(KafkaClient::TrainerConsumer, Some(&self.cfg.group_id))
            .create_with_context(context)?;
        let mut topics = vec![self.cfg.topic.as_str()];
        if !self.cfg.items_topic.is_empty() {
            topics.push(&self.cfg.items_topic);
        }
        consumer.subscribe(&topics)?;
        let dlq: FutureProducer = self
            .client(KafkaClient::DeadLetterProducer, None)
            .create()?;
        let health = &self.stats.health;
        health
            .publish_interval_ms
            .store(self.cfg.publish_interval_ms, Ordering::Relaxed);
        health
            .checkpoint_interval_ms
            .store(self.cfg.checkpoint_interval_ms, Ordering::Relaxed);
        health
            .checkpoints_on
            .store(!self.cfg.checkpoint_dir.is_empty(), Ordering::Relaxed);
        health.started_ms.store(now_ms(), Ordering::Relaxed);
        info!(topic = %self.cfg.topic, group = %self.cfg.group_id, "trainer consuming");

        let batch_timeout = Duration::from_millis(self.cfg.batch_timeout_ms);
        let publish_interval = Duration::from_millis(self.cfg.publish_interval_ms);
        let mut batch: Vec<Event> = Vec::with_capacity(self.cfg.batch_size);
        let mut batch_started = Instant::now();
        let mut last_publish = Instant::now();
        let snapshot_interval = Duration::from_millis(self.cfg.snapshot_interval_ms);
        let mut last_snapshot = Instant::now();
        let mut snapshot: Option<SnapshotTask> = None;
        let checkpoint_interval = Duration::from_millis(self.cfg.checkpoint_interval_ms);
        let mut last_checkpoint = Instant::now();
        let generation_poll = Duration::from_millis(self.cfg.generation_poll_ms);
        let mut last_poll = Instant::now();
        // A generation CURRENT points at but that cannot be loaded: not retried until
        // CURRENT changes again.
        let mut refused: Option<u64> = None;
        loop {
            let wait = batch_timeout.saturating_sub(batch_started.elapsed());
            tokio::select! {
                _ = cancel.cancelled() => break,
                received = tokio::time::timeout(wait.max(Duration::from_millis(1)), consumer.recv()) => {
                    match received {
                        Ok(Ok(msg)) if msg.topic() == self.cfg.items_topic => {
                            match parse_item(&msg, &self.limits) {
                                Ok(meta) => self.item_meta(meta)?,
                                Err(reason) => {
                                    self.stats.item_updates_rejected.fetch_add(1, Ordering::Relaxed);
                                    reject(&dlq, &self.cfg.dead_letter_topic, &msg, &reason).await;
                                }
                            }
                        }
                        Ok(Ok(msg)) => {
                            let (partition, offset) = (msg.partition(), msg.offset());
                            match parse(&msg, &self.limits) {
                                Ok(event) => {
                                    if batch.is_empty() {
                                        batch_started = Instant::now();
                                        self.batch_arrived = Some(batch_started);
                                    }
                                    batch.push(event);
                                    self.progress.received(partition, offset, Received::Queued);
                                }
                                Err(reason) => {
                                    self.stats.events_rejected.fetch_add(1, Ordering::Relaxed);
                                    self.progress.received(partition, offset, Received::DeadLettered);
                                    reject(&dlq, &self.cfg.dead_letter_topic, &msg, &reason).await;
                                }
                            }
                        }
                        Ok(Err(e)) => warn!(error = %e, "kafka receive error; retrying"),
                        Err(_elapsed) => {}
                    }
                }
            }
            let full = batch.len() >= self.cfg.batch_size;
            let waited = !batch.is_empty() && batch_started.elapsed() >= batch_timeout;
            if full || waited {
                self.train(std::mem::take(&mut batch)).await?;
                batch_started = Instant::now();
                self.publish_users().await;
            }
            if last_publish.elapsed() >= publish_interval {
                self.publish().await;
                last_publish = Instant::now();
            }
            if self.cfg.expire_after_s > 0 && last_expiry.elapsed() >= EXPIRY_INTERVAL {
                self.expire().await?;
                last_expiry = Instant::now();
            }
            if last_snapshot.elapsed() >= snapshot_interval
                && snapshot.as_ref().is_none_or(JoinHandle::is_finished)
            {
                if let Some(done) = snapshot.take() {
                    self.snapshot_finished(done).await;
                }
                snapshot = self.start_snapshot().await;
                last_snapshot = Instant::now();
            }
            if !self.cfg.checkpoint_dir.is_empty()
                && last_checkpoint.elapsed() >= checkpoint_interval
            {
                // A checkpoint holds only applied events: train the partial batch first.
                if !batch.is_empty() {
                    self.train(std::mem::take(&mut batch)).await?;
                    batch_started = Instant::now();
                }
                self.checkpoint(&consumer).await?;
                last_checkpoint = Instant::now();
            }
            if !self.cfg.models_dir.is_empty() && last_poll.elapsed() >= generation_poll {
                if self
                    .follow_current(&consumer, &mut batch, &mut snapshot, &mut refused)
                    .await?
                {
                    batch_started = Instant::now();
                    last_checkpoint = Instant::now();
                }
                last_poll = Instant::now();
            }
        }
        if !batch.is_empty() {
            self.train(batch).await?;
        }
        if !self.cfg.checkpoint_dir.is_empty() {
            self.checkpoint(&consumer).await?;
        }
        self.publish().await;
        if let Some(running) = snapshot.take() {
            self.snapshot_finished(running).await;
        }
        // A final snapshot, so a replica started later has little to replay.
        if let Some(last) = self.start_snapshot().await {
            self.snapshot_finished(last).await;
        }
        info!(
            trained = self.stats.events_trained.load(Ordering::Relaxed),
            rejected = self.stats.events_rejected.load(Ordering::Relaxed),
            "trainer stopped"
        );
        self.learner
            .take()
            .map(|l| l.model)
            .ok_or_else(|| TrainerError::Task("model lost".into()))
    }

    /// Trains one micro-batch on a blocking thread (see [`Learner::train`]) and records
    /// the queued events as applied or skipped.
    pub(super) async fn train(&mut self, batch: Vec<Event>) -> Result<()> {
        let mut learner = self
            .learner
            .take()
            .ok_or_else(|| TrainerError::Task("model lost".into()))?;
        let stats = self.stats.clone();
        let now = now_ms();
        for e in &batch {
            let behind = u64::try_from(now.saturating_sub(e.ts)).unwrap_or(0);
            stats.event_lag.observe(Duration::from_millis(behind));
        }
        if let Some(arrived) = self.batch_arrived.take() {
            self.unpublished_since.get_or_insert(arrived);
        }
        let (learner, applied) = tokio::task::spawn_blocking(move || {
            let applied = learner.train(batch, &stats);
            (learner, applied)
        })
        .await
        .map_err(|e| TrainerError::Task(e.to_string()))?;
        self.learner = Some(learner);
        self.progress.trained(applied? == Applied::Skipped);
        Ok(())
    }

    /// Expires ids unseen for `trainer.expire_after_s` (in event time) and sends
    /// tombstones for the expired items: they leave every replica's index.
    async fn expire(&mut self) -> Result<()> {
        let (after, stats) = (self.cfg.expire_after_s, self.stats.clone());
        let ids = self.learner_mut()?.expire(after, &stats);
        if !ids.is_empty()
            && let Err(e) = self.items.remove_items(ids.clone()).await
        {
            // Retried with the next publish, like hidden items.
            warn!(error = %e, "could not send tombstones for expired items");
            self.learner_mut()?.dirty.hidden.extend(ids);
        }
        Ok(())
    }

    fn item_meta(&mut self, meta: recsys_schemas::ItemMeta) -> Result<()> {
        let stats = self.stats.clone();
        self.learner_mut()?.item_meta(meta, &stats);
        Ok(())
    }
}
