//! The online training loop: consume `events`, micro-batch, train a step on a blocking
//! thread, publish changed vectors every `publish_interval`. A message that fails to parse
//! or validate is counted, logged and sent to the dead-letter topic with its source
//! partition, offset and reason; it never stops the loop.

use std::collections::BTreeMap;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use recsys_engine::checkpoint::{self, CheckpointMeta};
use recsys_engine::generations;
use recsys_engine::ids::Admission;
use recsys_engine::index::{IndexConfig, ItemIndex};
use recsys_engine::metrics::Prequential;
use recsys_engine::model::Model;
use recsys_engine::popularity::Popularity;
use recsys_engine::snapshot;
use recsys_schemas::{Event, ItemMeta};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::sink::{ItemUpdate, ItemVectorSink, UserUpdate, UserVectorSink};
use crate::{Result, TrainerConfig, TrainerError};

/// Counters of the loop, readable while it runs.
#[derive(Debug, Default)]
pub struct TrainerStats {
    pub events_trained: AtomicU64,
    pub events_rejected: AtomicU64,
    pub batches: AtomicU64,
    pub batches_skipped: AtomicU64,
    /// Events in skipped batches (non-finite loss).
    pub events_skipped: AtomicU64,
    /// Time spent inside training steps.
    pub train_nanos: AtomicU64,
    pub publishes: AtomicU64,
    pub publish_errors: AtomicU64,
    /// Events not trained on because their new user or item is not admitted yet
    /// (`trainer.min_count`); they count as applied.
    pub events_not_admitted: AtomicU64,
    /// Users and items expired (`trainer.expire_after_s`).
    pub users_expired: AtomicU64,
    pub items_expired: AtomicU64,
    /// Item-metadata messages applied, and those rejected to the dead-letter topic.
    pub item_updates: AtomicU64,
    pub item_updates_rejected: AtomicU64,
    /// Items currently hidden.
    pub items_hidden: AtomicU64,
    /// Checkpoints written, and attempts that failed.
    pub checkpoints: AtomicU64,
    pub checkpoint_errors: AtomicU64,
    /// Base index snapshots written, and attempts that failed.
    pub snapshots: AtomicU64,
    pub snapshot_errors: AtomicU64,
    /// Bits of the last finite batch loss (f32).
    pub last_loss_bits: AtomicU64,
    /// Prequential HitRate@10 and NDCG@10 over the window (f64 bits), and events ranked.
    pub prequential_hr_bits: AtomicU64,
    pub prequential_ndcg_bits: AtomicU64,
    pub prequential_scored: AtomicU64,
    /// The generation being evolved, and how many times it changed (`models/CURRENT`).
    pub generation: AtomicU64,
    pub generation_switches: AtomicU64,
}

impl TrainerStats {
    /// Events trained per second of training-step time.
    pub fn train_events_per_s(&self) -> f64 {
        let secs = self.train_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        if secs == 0.0 {
            0.0
        } else {
            self.events_trained.load(Ordering::Relaxed) as f64 / secs
        }
    }

    /// Messages dealt with: trained, rejected to the dead-letter topic, or in a skipped
    /// batch.
    pub fn messages_done(&self) -> u64 {
        self.events_trained.load(Ordering::Relaxed)
            + self.events_rejected.load(Ordering::Relaxed)
            + self.events_skipped.load(Ordering::Relaxed)
    }

    pub fn last_loss(&self) -> f32 {
        f32::from_bits(self.last_loss_bits.load(Ordering::Relaxed) as u32)
    }

    /// Prequential (test-then-train) HitRate@10 and NDCG@10 over the sliding window.
    pub fn prequential(&self) -> (f64, f64) {
        (
            f64::from_bits(self.prequential_hr_bits.load(Ordering::Relaxed)),
            f64::from_bits(self.prequential_ndcg_bits.load(Ordering::Relaxed)),
        )
    }
}

/// Rows changed since the last publish, and the users' new items.
#[derive(Default)]
struct Dirty {
    users: HashSet<u32>,
    items: HashSet<u32>,
    new_items: HashMap<u32, Vec<String>>,
    /// Items hidden since the last publish: tombstones to send.
    hidden: HashSet<String>,
}

/// Where the model stands in the event stream, per partition of the events topic.
#[derive(Debug, Default)]
struct Progress {
    /// The next offset to read: every message below it is in the model, dead-lettered,
    /// skipped, or in the batch being filled.
    next: BTreeMap<i32, i64>,
    applied: BTreeMap<i32, u64>,
    dead_lettered: BTreeMap<i32, u64>,
    /// Events of batches skipped for a non-finite loss.
    skipped: BTreeMap<i32, u64>,
    /// Partitions of the events in the batch being filled, in order.
    pending: Vec<i32>,
    /// Shared with the consumer's rebalance hook: where to resume an assigned partition.
    resume: Arc<Mutex<BTreeMap<i32, i64>>>,
}

/// On every partition assignment, starts each events partition at the model's own
/// position (from the checkpoint, then from what has been consumed) instead of the
/// group's committed offset.
struct ResumeContext {
    topic: String,
    resume: Arc<Mutex<BTreeMap<i32, i64>>>,
}

impl ClientContext for ResumeContext {}

impl ConsumerContext for ResumeContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        let resume = self.resume.lock().unwrap_or_else(|p| p.into_inner());
        for mut elem in tpl.elements_for_topic(&self.topic) {
            if let Some(&offset) = resume.get(&elem.partition()) {
                info!(
                    partition = elem.partition(),
                    offset, "resuming from the model's position"
                );
                if let Err(e) = elem.set_offset(Offset::Offset(offset)) {
                    warn!(error = %e, "could not set the resume offset");
                }
            }
        }
    }
}

/// What became of one message of the events topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Received {
    /// Parsed and queued for the next training step.
    Queued,
    /// Sent to the dead-letter topic.
    DeadLettered,
}

impl Progress {
    /// Records a message taken from `partition` at `offset`.
    fn received(&mut self, partition: i32, offset: i64, what: Received) {
        self.next.insert(partition, offset + 1);
        self.resume
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(partition, offset + 1);
        match what {
            Received::Queued => self.pending.push(partition),
            Received::DeadLettered => *self.dead_lettered.entry(partition).or_default() += 1,
        }
    }

    /// Records that the queued events went through one training step.
    fn trained(&mut self, skipped: bool) {
        let count = if skipped {
            &mut self.skipped
        } else {
            &mut self.applied
        };
        for p in self.pending.drain(..) {
            *count.entry(p).or_default() += 1;
        }
    }
}

fn key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// The entries of `topic` in a map keyed by [`key`], by partition.
fn of_topic<V: Copy>(m: &BTreeMap<String, V>, topic: &str) -> BTreeMap<i32, V> {
    m.iter()
        .filter_map(|(k, &v)| {
            let (t, p) = k.rsplit_once('/')?;
            (t == topic).then_some(())?;
            Some((p.parse().ok()?, v))
        })
        .collect()
}

/// The online trainer: owns the model while it runs and gives it back when stopped.
pub struct OnlineTrainer {
    cfg: TrainerConfig,
    model: Option<Model>,
    popularity: Popularity,
    users: Arc<dyn UserVectorSink>,
    items: Arc<dyn ItemVectorSink>,
    stats: Arc<TrainerStats>,
    dirty: Dirty,
    /// How snapshot indexes are built (`trainer.snapshot_dir` turns snapshots on).
    index_cfg: IndexConfig,
    /// Items hidden by the `items` topic: never published, never in a snapshot or the
    /// popular list.
    hidden: HashSet<String>,
    progress: Progress,
    prequential: Prequential,
    batches_seen: u64,
    /// Minimum-count admission of new users and items.
    admit_users: Admission,
    admit_items: Admission,
    /// Newest event time seen (ms): expiry runs in event time, so a replay expires the
    /// same ids.
    newest_ts: i64,
}

type SnapshotTask = JoinHandle<Result<PathBuf>>;

/// How often the trainer looks for expired ids (when `trainer.expire_after_s` is set).
const EXPIRY_INTERVAL: Duration = Duration::from_secs(30);

/// Pending (not yet admitted) ids remembered per kind under `trainer.min_count`.
const MAX_PENDING_IDS: usize = 1_000_000;

impl OnlineTrainer {
    pub fn new(
        cfg: TrainerConfig,
        model: Model,
        users: Arc<dyn UserVectorSink>,
        items: Arc<dyn ItemVectorSink>,
    ) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            popularity: Popularity::new(cfg.popularity_half_life_s * 1000.0),
            prequential: Prequential::new(10, cfg.prequential_window),
            batches_seen: 0,
            admit_users: Admission::new(cfg.min_count, MAX_PENDING_IDS),
            admit_items: Admission::new(cfg.min_count, MAX_PENDING_IDS),
            newest_ts: i64::MIN,
            cfg,
            model: Some(model),
            users,
            items,
            stats: Arc::new(TrainerStats::default()),
            dirty: Dirty::default(),
            index_cfg: IndexConfig::default(),
            hidden: HashSet::new(),
            progress: Progress::default(),
        })
    }

    /// How the indexes of base snapshots are built (the serving side's `[index]`).
    pub fn with_index_config(mut self, index_cfg: IndexConfig) -> Self {
        self.index_cfg = index_cfg;
        self
    }

    pub fn stats(&self) -> Arc<TrainerStats> {
        self.stats.clone()
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
        };
        let consumer: StreamConsumer<ResumeContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.cfg.brokers)
            .set("group.id", &self.cfg.group_id)
            // Positions come from checkpoints; Kafka's committed offsets only follow them.
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .create_with_context(context)?;
        let mut topics = vec![self.cfg.topic.as_str()];
        if !self.cfg.items_topic.is_empty() {
            topics.push(&self.cfg.items_topic);
        }
        consumer.subscribe(&topics)?;
        let dlq: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.cfg.brokers)
            .set("message.timeout.ms", "10000")
            .create()?;
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
                            match parse_item(&msg) {
                                Ok(meta) => self.item_meta(meta),
                                Err(reason) => {
                                    self.stats.item_updates_rejected.fetch_add(1, Ordering::Relaxed);
                                    self.reject(&dlq, &msg, &reason).await;
                                }
                            }
                        }
                        Ok(Ok(msg)) => {
                            let (partition, offset) = (msg.partition(), msg.offset());
                            match parse(&msg) {
                                Ok(event) => {
                                    if batch.is_empty() {
                                        batch_started = Instant::now();
                                    }
                                    batch.push(event);
                                    self.progress.received(partition, offset, Received::Queued);
                                }
                                Err(reason) => {
                                    self.stats.events_rejected.fetch_add(1, Ordering::Relaxed);
                                    self.progress.received(partition, offset, Received::DeadLettered);
                                    self.reject(&dlq, &msg, &reason).await;
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
            }
            if last_publish.elapsed() >= publish_interval {
                self.publish().await;
                last_publish = Instant::now();
            }
            if self.cfg.expire_after_s > 0 && last_expiry.elapsed() >= EXPIRY_INTERVAL {
                self.expire().await;
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
        self.model
            .take()
            .ok_or_else(|| TrainerError::Task("model lost".into()))
    }

    /// Sends a message that failed to parse or validate to the dead-letter topic, with
    /// its source topic, partition and offset and the reason in headers.
    async fn reject(&self, dlq: &FutureProducer, msg: &BorrowedMessage<'_>, reason: &str) {
        warn!(
            topic = msg.topic(),
            partition = msg.partition(),
            offset = msg.offset(),
            reason,
            "rejected event sent to the dead-letter topic"
        );
        let partition = msg.partition().to_string();
        let offset = msg.offset().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "source_topic",
                value: Some(msg.topic()),
            })
            .insert(Header {
                key: "source_partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "source_offset",
                value: Some(offset.as_str()),
            })
            .insert(Header {
                key: "reason",
                value: Some(reason),
            });
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.cfg.dead_letter_topic)
                .payload(msg.payload().unwrap_or_default())
                .headers(headers);
        if let Some(key) = msg.key() {
            record = record.key(key);
        }
        if let Err((e, _)) = dlq.send(record, Duration::from_secs(5)).await {
            warn!(error = %e, "could not write to the dead-letter topic");
        }
    }

    async fn train(&mut self, batch: Vec<Event>) -> Result<()> {
        let mut model = self
            .model
            .take()
            .ok_or_else(|| TrainerError::Task("model lost".into()))?;
        if let Some(newest) = batch.iter().map(|e| e.ts).max() {
            self.newest_ts = self.newest_ts.max(newest);
        }
        let batch = if self.cfg.min_count > 1 {
            let before = batch.len();
            let admitted: Vec<Event> = batch
                .into_iter()
                .filter(|e| {
                    let u = self
                        .admit_users
                        .admit(&e.user_id, model.user_ids().get(&e.user_id).is_some());
                    let i = self
                        .admit_items
                        .admit(&e.item_id, model.item_ids().get(&e.item_id).is_some());
                    u && i
                })
                .collect();
            self.stats
                .events_not_admitted
                .fetch_add((before - admitted.len()) as u64, Ordering::Relaxed);
            admitted
        } else {
            batch
        };
        if batch.is_empty() {
            self.progress.trained(false);
            self.model = Some(model);
            return Ok(());
        }
        let sample = if self.cfg.prequential_sample > 0
            && self
                .batches_seen
                .is_multiple_of(self.cfg.prequential_every_batches)
        {
            self.cfg.prequential_sample
        } else {
            0
        };
        self.batches_seen += 1;
        let (model, outcome, batch, ranks) = tokio::task::spawn_blocking(move || {
            // Test, then train: the sampled events are ranked by the model as it was
            // before it saw them (evenly spaced through the batch).
            let ranks = if sample > 0 {
                let step = batch.len().div_ceil(sample).max(1);
                let picked: Vec<&Event> = batch.iter().step_by(step).collect();
                model.ranks(&picked)
            } else {
                Ok(Vec::new())
            };
            let started = Instant::now();
            let outcome = model.train_events(&batch);
            (model, outcome.map(|o| (o, started.elapsed())), batch, ranks)
        })
        .await
        .map_err(|e| TrainerError::Task(e.to_string()))?;
        match ranks {
            Ok(ranks) if !ranks.is_empty() => {
                for r in ranks {
                    self.prequential.push(r);
                }
                let (hr, ndcg) = (self.prequential.hit_rate(), self.prequential.ndcg());
                self.stats
                    .prequential_hr_bits
                    .store(hr.to_bits(), Ordering::Relaxed);
                self.stats
                    .prequential_ndcg_bits
                    .store(ndcg.to_bits(), Ordering::Relaxed);
                self.stats
                    .prequential_scored
                    .store(self.prequential.scored(), Ordering::Relaxed);
                debug!(hr_at_10 = hr, ndcg_at_10 = ndcg, "prequential");
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "prequential scoring failed"),
        }
        let ((step, user_rows, item_rows), took) = match outcome {
            Ok(o) => o,
            Err(e) => {
                self.model = Some(model);
                return Err(e.into());
            }
        };
        self.progress.trained(step.skipped);
        self.stats
            .train_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        if step.skipped {
            self.stats.batches_skipped.fetch_add(1, Ordering::Relaxed);
            self.stats
                .events_skipped
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            warn!(events = batch.len(), "non-finite loss; batch skipped");
        } else {
            self.stats
                .events_trained
                .fetch_add(step.events as u64, Ordering::Relaxed);
            self.stats
                .last_loss_bits
                .store(u64::from(step.loss.to_bits()), Ordering::Relaxed);
            debug!(events = step.events, loss = step.loss, "trained batch");
            self.dirty.users.extend(user_rows);
            self.dirty.items.extend(item_rows);
            for e in &batch {
                let (Some(u), Some(i)) = (
                    model.user_ids().get(&e.user_id),
                    model.item_ids().get(&e.item_id),
                ) else {
                    continue;
                };
                self.popularity.add(i, e.weight, e.ts);
                self.dirty
                    .new_items
                    .entry(u)
                    .or_default()
                    .push(e.item_id.clone());
            }
        }
        self.model = Some(model);
        Ok(())
    }

    /// Replaces the model and the stream position with the newest valid checkpoint, if
    /// `checkpoint_dir` holds one.
    async fn restore(&mut self) -> Result<()> {
        if self.cfg.checkpoint_dir.is_empty() {
            return Ok(());
        }
        let loaded = self
            .load_checkpoint(PathBuf::from(&self.cfg.checkpoint_dir))
            .await??;
        let Some((model, meta, path)) = loaded else {
            info!(dir = %self.cfg.checkpoint_dir, "no checkpoint; starting from the group's offsets");
            return Ok(());
        };
        if meta.generation != self.cfg.generation {
            return Err(TrainerError::Config(format!(
                "trainer.generation: {} but the newest checkpoint ({}) is of generation {}",
                self.cfg.generation,
                path.display(),
                meta.generation
            )));
        }
        self.adopt(model, &meta, &path);
        Ok(())
    }

    /// The newest valid checkpoint in `dir`, loaded on a blocking thread onto the
    /// model's device. The outer error is the task's, the inner one the load's.
    async fn load_checkpoint(
        &self,
        dir: PathBuf,
    ) -> Result<recsys_engine::Result<Option<(Model, CheckpointMeta, PathBuf)>>> {
        let device = self
            .model
            .as_ref()
            .ok_or_else(|| TrainerError::Task("model lost".into()))?
            .device()
            .clone();
        tokio::task::spawn_blocking(move || checkpoint::load_latest(&dir, &device))
            .await
            .map_err(|e| TrainerError::Task(e.to_string()))
    }

    /// Takes `model` and the stream position of its checkpoint `meta`.
    fn adopt(&mut self, model: Model, meta: &CheckpointMeta, path: &std::path::Path) {
        let t = &self.cfg.topic;
        self.progress.next = of_topic(&meta.offsets, t);
        self.progress.applied = of_topic(&meta.applied, t);
        self.progress.dead_lettered = of_topic(&meta.dead_lettered, t);
        self.progress.skipped = of_topic(&meta.skipped, t);
        *self
            .progress
            .resume
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = self.progress.next.clone();
        info!(
            path = %path.display(),
            users = model.user_ids().len(),
            items = model.item_ids().len(),
            offsets = ?self.progress.next,
            "restored from checkpoint"
        );
        self.model = Some(model);
    }

    /// With `trainer.models_dir`: evolve the current generation (making
    /// `trainer.generation` current if nothing is), with checkpoints and snapshots in its
    /// directory.
    fn enter_models_dir(&mut self) -> Result<()> {
        if self.cfg.models_dir.is_empty() {
            self.stats
                .generation
                .store(self.cfg.generation, Ordering::Relaxed);
            return Ok(());
        }
        let models = PathBuf::from(&self.cfg.models_dir);
        let c = generations::init_current(&models, self.cfg.generation)
            .map_err(|e| TrainerError::Config(format!("trainer.models_dir: {e}")))?;
        self.set_generation(c.generation);
        info!(models = %models.display(), generation = c.generation, "evolving the current generation");
        Ok(())
    }

    fn set_generation(&mut self, g: u64) {
        let models = PathBuf::from(&self.cfg.models_dir);
        self.cfg.generation = g;
        self.cfg.checkpoint_dir = generations::generation_dir(&models, g)
            .to_string_lossy()
            .into_owned();
        self.cfg.snapshot_dir = generations::snapshot_dir(&models, g)
            .to_string_lossy()
            .into_owned();
        self.stats.generation.store(g, Ordering::Relaxed);
    }

    /// Follows a flip of `models/CURRENT`: leaves the old generation complete (batch
    /// trained, checkpoint, vectors published), warm-starts from the new generation's
    /// newest checkpoint, seeks every assigned events partition to that checkpoint's
    /// offsets (the retrain's cutoff), so the events between cutoff and switch are
    /// replayed into it, and republishes every vector under the new generation. Returns
    /// whether it switched.
    async fn follow_current(
        &mut self,
        consumer: &StreamConsumer<ResumeContext>,
        batch: &mut Vec<Event>,
        snapshot: &mut Option<SnapshotTask>,
        refused: &mut Option<u64>,
    ) -> Result<bool> {
        let models = PathBuf::from(&self.cfg.models_dir);
        let to = match generations::current(&models) {
            Ok(Some(c)) if c.generation != self.cfg.generation => c.generation,
            Ok(_) => {
                *refused = None;
                return Ok(false);
            }
            Err(e) => {
                debug!(error = %e, "cannot read the generation pointer; will retry");
                return Ok(false);
            }
        };
        if *refused == Some(to) {
            return Ok(false);
        }
        let loaded = self
            .load_checkpoint(generations::generation_dir(&models, to))
            .await?;
        let (model, meta, path) = match loaded {
            Ok(Some(found)) if found.1.generation == to => found,
            other => {
                warn!(
                    generation = to,
                    staying_on = self.cfg.generation,
                    found = ?other.map(|o| o.map(|x| x.1.generation)),
                    "CURRENT points at a generation without a loadable checkpoint of its own; not switching"
                );
                *refused = Some(to);
                return Ok(false);
            }
        };
        // The old generation stays complete and resumable: a rollback returns to it.
        if !batch.is_empty() {
            self.train(std::mem::take(batch)).await?;
        }
        self.checkpoint(consumer).await?;
        self.publish().await;
        if let Some(running) = snapshot.take() {
            self.snapshot_finished(running).await;
        }
        let from = self.cfg.generation;
        let old = self
            .model
            .take()
            .ok_or_else(|| TrainerError::Task("model lost".into()))?;
        // Popularity is per item row: carry it over to the new model's rows.
        self.popularity = self.popularity.remap(|row| {
            old.item_ids()
                .id(row)
                .and_then(|id| model.item_ids().get(id))
        });
        drop(old);
        self.set_generation(to);
        self.adopt(model, &meta, &path);
        // Every vector goes out again under the new generation: an in-process user store
        // never got the retrain's, and a rolled-back generation's keys may have expired.
        let hidden = std::mem::take(&mut self.dirty.hidden);
        self.dirty = Dirty {
            hidden,
            ..Dirty::default()
        };
        if let Some(m) = self.model.as_ref() {
            let users = m.user_ids();
            let items = m.item_ids();
            self.dirty.users = (0..users.len() as u32)
                .filter(|&r| users.id(r).is_some())
                .collect();
            self.dirty.items = (0..items.len() as u32)
                .filter(|&r| items.id(r).is_some())
                .collect();
        }
        self.seek_to_model(consumer)?;
        self.checkpoint(consumer).await?;
        self.stats
            .generation_switches
            .fetch_add(1, Ordering::Relaxed);
        info!(
            from,
            to,
            offsets = ?self.progress.next,
            "switched generation: warm-started from its checkpoint, replaying the events after its offsets"
        );
        Ok(true)
    }

    /// Moves every assigned events partition to the model's position; partitions the
    /// model has no offset for start at their beginning.
    fn seek_to_model(&mut self, consumer: &StreamConsumer<ResumeContext>) -> Result<()> {
        let topic = self.cfg.topic.clone();
        let assigned = consumer.assignment()?;
        let timeout = Duration::from_secs(5);
        for elem in assigned.elements_for_topic(&topic) {
            let p = elem.partition();
            let offset = match self.progress.next.get(&p) {
                Some(&o) => o,
                None => {
                    let (low, _) = consumer.fetch_watermarks(&topic, p, timeout)?;
                    self.progress.next.insert(p, low);
                    low
                }
            };
            self.progress
                .resume
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(p, offset);
            consumer.seek(&topic, p, Offset::Offset(offset), timeout)?;
        }
        Ok(())
    }

    /// Writes a checkpoint of the model and its stream position (call with no events
    /// waiting in a batch), then lets Kafka's committed offsets follow it. A failed write
    /// is logged, counted and retried at the next interval.
    async fn checkpoint(&mut self, consumer: &StreamConsumer<ResumeContext>) -> Result<()> {
        let model = self
            .model
            .take()
            .ok_or_else(|| TrainerError::Task("model lost".into()))?;
        let t = &self.cfg.topic;
        let meta = CheckpointMeta {
            generation: self.cfg.generation,
            offsets: self
                .progress
                .next
                .iter()
                .map(|(&p, &o)| (key(t, p), o))
                .collect(),
            applied: self
                .progress
                .applied
                .iter()
                .map(|(&p, &n)| (key(t, p), n))
                .collect(),
            dead_lettered: self
                .progress
                .dead_lettered
                .iter()
                .map(|(&p, &n)| (key(t, p), n))
                .collect(),
            skipped: self
                .progress
                .skipped
                .iter()
                .map(|(&p, &n)| (key(t, p), n))
                .collect(),
            created_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        };
        let dir = PathBuf::from(&self.cfg.checkpoint_dir);
        let keep = self.cfg.checkpoint_keep;
        let meta2 = meta.clone();
        let (model, written) = tokio::task::spawn_blocking(move || {
            let r = checkpoint::write(&dir, &model, &meta2, keep);
            (model, r)
        })
        .await
        .map_err(|e| TrainerError::Task(format!("checkpoint task: {e}")))?;
        self.model = Some(model);
        match written {
            Ok(path) => {
                self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                debug!(path = %path.display(), "checkpoint written");
                let mut tpl = TopicPartitionList::new();
                for (&p, &o) in &self.progress.next {
                    let _ = tpl.add_partition_offset(t, p, Offset::Offset(o));
                }
                if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                    warn!(error = %e, "could not commit the checkpointed offsets");
                }
            }
            Err(e) => {
                self.stats.checkpoint_errors.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "checkpoint failed; will retry");
            }
        }
        Ok(())
    }

    /// Expires users and items unseen for `trainer.expire_after_s` (in event time): their
    /// rows are freed for new ids, expired items get tombstones (they leave every
    /// replica's index) and leave the popular list.
    async fn expire(&mut self) {
        let Some(model) = self.model.as_mut() else {
            return;
        };
        if self.newest_ts == i64::MIN {
            return;
        }
        let cutoff = self
            .newest_ts
            .saturating_sub((self.cfg.expire_after_s as i64).saturating_mul(1000));
        let expired = model.expire(cutoff);
        if expired.is_empty() {
            return;
        }
        for &(row, _) in &expired.items {
            self.popularity.reset(row);
            self.dirty.items.remove(&row);
        }
        for &(row, _) in &expired.users {
            self.dirty.users.remove(&row);
            self.dirty.new_items.remove(&row);
        }
        self.stats
            .users_expired
            .fetch_add(expired.users.len() as u64, Ordering::Relaxed);
        self.stats
            .items_expired
            .fetch_add(expired.items.len() as u64, Ordering::Relaxed);
        info!(
            users = expired.users.len(),
            items = expired.items.len(),
            cutoff_ms = cutoff,
            "expired ids"
        );
        let ids: Vec<String> = expired.items.into_iter().map(|x| x.1).collect();
        if !ids.is_empty()
            && let Err(e) = self.items.remove_items(ids.clone()).await
        {
            // Retried with the next publish, like hidden items.
            warn!(error = %e, "could not send tombstones for expired items");
            self.dirty.hidden.extend(ids);
        }
    }

    /// Applies one item-metadata message: hiding an item queues a tombstone and keeps
    /// its vector out of every later publish and snapshot; showing it again republishes
    /// its vector.
    fn item_meta(&mut self, meta: ItemMeta) {
        self.stats.item_updates.fetch_add(1, Ordering::Relaxed);
        if let Some(model) = self.model.as_mut() {
            model.set_item_categories(&meta.item_id, &meta.categories);
        }
        if meta.hidden {
            if self.hidden.insert(meta.item_id.clone()) {
                info!(item = %meta.item_id, "item hidden");
                self.dirty.hidden.insert(meta.item_id);
            }
        } else if self.hidden.remove(&meta.item_id) {
            info!(item = %meta.item_id, "item shown again");
            self.dirty.hidden.remove(&meta.item_id);
            if let Some(row) = self
                .model
                .as_ref()
                .and_then(|m| m.item_ids().get(&meta.item_id))
            {
                self.dirty.items.insert(row);
            }
        }
        self.stats
            .items_hidden
            .store(self.hidden.len() as u64, Ordering::Relaxed);
    }

    /// Rows of the hidden items the model knows.
    fn hidden_rows(&self, model: &Model) -> HashSet<u32> {
        self.hidden
            .iter()
            .filter_map(|id| model.item_ids().get(id))
            .collect()
    }

    /// Starts writing a base index snapshot of every item vector, if `snapshot_dir` is
    /// set. Changed vectors are published first, so the snapshot's offsets (the ends of
    /// the item-vector partitions) cover everything it holds; the index is built and
    /// written on a blocking thread while training goes on.
    async fn start_snapshot(&mut self) -> Option<SnapshotTask> {
        if self.cfg.snapshot_dir.is_empty() {
            return None;
        }
        self.publish().await;
        if !self.dirty.items.is_empty() {
            warn!("item vectors not published; snapshot postponed");
            return None;
        }
        let offsets = match self.items.end_offsets().await {
            Ok(o) => o,
            Err(e) => {
                self.stats.snapshot_errors.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "cannot read the item-vector offsets; snapshot postponed");
                return None;
            }
        };
        let model = self.model.as_ref()?;
        let ids = model.item_ids().clone();
        if ids.is_empty() {
            return None;
        }
        let dim = model.dim();
        let hidden = self.hidden_rows(model);
        // Free rows (expired ids) hold no item.
        let live: Vec<u32> = (0..ids.len() as u32)
            .filter(|r| !hidden.contains(r) && ids.id(*r).is_some())
            .collect();
        let rows: Vec<u64> = live.iter().map(|&r| u64::from(r)).collect();
        let vectors = match model.item_vectors(&live) {
            Ok(v) => v,
            Err(e) => {
                self.stats.snapshot_errors.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "cannot compute item vectors; snapshot postponed");
                return None;
            }
        };
        let dir = PathBuf::from(&self.cfg.snapshot_dir);
        let (generation, keep) = (self.cfg.generation, self.cfg.snapshot_keep);
        let index_cfg = self.index_cfg.clone();
        Some(tokio::task::spawn_blocking(move || {
            let index = ItemIndex::build(dim, &index_cfg, &rows, &vectors)?;
            Ok(snapshot::write(
                &dir, generation, &ids, &index, &offsets, keep,
            )?)
        }))
    }

    async fn snapshot_finished(&self, task: SnapshotTask) {
        match task.await {
            Ok(Ok(path)) => {
                self.stats.snapshots.fetch_add(1, Ordering::Relaxed);
                info!(path = %path.display(), "index snapshot written");
            }
            Ok(Err(e)) => {
                self.stats.snapshot_errors.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "index snapshot failed");
            }
            Err(e) => {
                self.stats.snapshot_errors.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "index snapshot task failed");
            }
        }
    }

    /// Publishes changed vectors. A failing store is logged and counted and the changes
    /// are kept for the next attempt; training goes on.
    async fn publish(&mut self) {
        let Some(model) = self.model.as_ref() else {
            return;
        };
        if self.dirty.users.is_empty()
            && self.dirty.items.is_empty()
            && self.dirty.hidden.is_empty()
        {
            return;
        }
        let generation = self.cfg.generation;
        let hidden_rows = self.hidden_rows(model);
        let user_rows: Vec<u32> = self.dirty.users.iter().copied().collect();
        let item_rows: Vec<u32> = self
            .dirty
            .items
            .iter()
            .copied()
            .filter(|row| !hidden_rows.contains(row))
            .collect();
        let (user_vectors, item_vectors) = match (
            model.user_vectors(&user_rows),
            model.item_vectors(&item_rows),
        ) {
            (Ok(u), Ok(i)) => (u, i),
            (Err(e), _) | (_, Err(e)) => {
                self.stats.publish_errors.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "cannot compute vectors; will retry");
                return;
            }
        };
        let d = model.dim();
        let dirty = std::mem::take(&mut self.dirty);
        let users: Vec<UserUpdate> = user_rows
            .iter()
            .zip(user_vectors.chunks_exact(d))
            .filter_map(|(&row, v)| {
                Some(UserUpdate {
                    user_id: model.user_ids().id(row)?.to_owned(),
                    vector: v.to_vec(),
                    new_items: dirty.new_items.get(&row).cloned().unwrap_or_default(),
                })
            })
            .collect();
        let items: Vec<ItemUpdate> = item_rows
            .iter()
            .zip(item_vectors.chunks_exact(d))
            .filter_map(|(&row, v)| {
                Some(ItemUpdate {
                    item_id: model.item_ids().id(row)?.to_owned(),
                    vector: v.to_vec(),
                })
            })
            .collect();
        let popular: Vec<(String, f32)> = self
            .popularity
            .top_k(self.cfg.popular_items, &hidden_rows)
            .into_iter()
            .filter_map(|(row, s)| Some((model.item_ids().id(row)?.to_owned(), s)))
            .collect();
        // Items first: a user vector is only useful once the items it points at are
        // searchable.
        let removed: Vec<String> = dirty.hidden.iter().cloned().collect();
        let result = async {
            self.items.publish_items(generation, items).await?;
            if !removed.is_empty() {
                self.items.remove_items(removed).await?;
            }
            self.items.publish_popular(generation, popular).await?;
            self.users.publish(generation, &users).await
        }
        .await;
        match result {
            Ok(()) => {
                self.stats.publishes.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats.publish_errors.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, retry = ?e.retry_hint(), "publish failed; will retry");
                self.dirty.users.extend(dirty.users);
                self.dirty.items.extend(dirty.items);
                // Still hidden ones only: an item shown again meanwhile needs no tombstone.
                self.dirty.hidden.extend(
                    dirty
                        .hidden
                        .into_iter()
                        .filter(|id| self.hidden.contains(id)),
                );
                for (u, items) in dirty.new_items {
                    let pending = self.dirty.new_items.entry(u).or_default();
                    let mut merged = items;
                    merged.append(pending);
                    *pending = merged;
                }
            }
        }
    }
}

/// Parses an `items` message; the error is the dead-letter reason.
fn parse_item(msg: &BorrowedMessage<'_>) -> Result<ItemMeta, String> {
    let payload = msg.payload().ok_or_else(|| "empty message".to_owned())?;
    let default_ts = msg.timestamp().to_millis().unwrap_or(0);
    ItemMeta::from_json(payload, default_ts).map_err(|e| e.to_string())
}

/// Parses a Kafka message into a validated event; the error is the dead-letter reason.
fn parse(msg: &BorrowedMessage<'_>) -> Result<Event, String> {
    let payload = msg.payload().ok_or_else(|| "empty message".to_owned())?;
    let default_ts = msg.timestamp().to_millis().unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    });
    Event::from_json(payload, default_ts).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Messages of several partitions, each in offset order but interleaved at random,
        /// some dead-lettered, trained in batches of random size with random skipped
        /// batches, checkpointed at random moments (always after training what is queued,
        /// as the trainer does): the stored offset of every partition is the contiguous
        /// low watermark of what was processed, and every message below it is counted
        /// exactly once.
        #[test]
        fn stored_offsets_are_contiguous_low_watermarks(
            stream in prop::collection::vec((0i32..4, any::<bool>(), 0u8..10, any::<bool>()), 1..400)
        ) {
            let mut progress = Progress::default();
            let mut next_offset = [0i64; 4];
            for (partition, bad, action, skip) in stream {
                let offset = next_offset[partition as usize];
                next_offset[partition as usize] += 1;
                let what = if bad { Received::DeadLettered } else { Received::Queued };
                progress.received(partition, offset, what);
                // Sometimes a training step, sometimes a checkpoint (train first).
                if action == 0 || action == 1 {
                    progress.trained(skip && action == 0);
                }
                if action == 2 {
                    progress.trained(false);
                    for (&p, &next) in &progress.next {
                        prop_assert_eq!(next, next_offset[p as usize]);
                        let n = |m: &BTreeMap<i32, u64>| m.get(&p).copied().unwrap_or(0);
                        prop_assert_eq!(
                            n(&progress.applied) + n(&progress.dead_lettered) + n(&progress.skipped),
                            next as u64
                        );
                    }
                    let resume = progress.resume.lock().unwrap().clone();
                    prop_assert_eq!(resume, progress.next.clone());
                }
            }
        }
    }
}
