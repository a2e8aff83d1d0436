//! What the trainer does with one micro-batch, without Kafka: admission of new ids, the
//! prequential test-then-train scoring, the model's step, the decayed popularity, and
//! the rows and recent items to publish; also expiry and item metadata. The Kafka loop
//! runs this on a blocking thread; nothing here waits on the network.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Instant;

use recsys_engine::metrics::Prequential;
use recsys_engine::model::Model;
use recsys_engine::popularity::Popularity;
use recsys_index::ids::Admission;
use recsys_schemas::{Event, ItemMeta};
use tracing::{debug, info, warn};

use super::stats::TrainerStats;
use crate::{Result, TrainerConfig};

/// Pending (not yet admitted) ids remembered per kind under `trainer.min_count`.
const MAX_PENDING_IDS: usize = 1_000_000;

/// Rows changed since the last publish, and the users' new items.
#[derive(Default)]
pub(super) struct Dirty {
    pub(super) users: HashSet<u32>,
    pub(super) items: HashSet<u32>,
    pub(super) new_items: HashMap<u32, Vec<String>>,
    /// Items hidden since the last publish: tombstones to send.
    pub(super) hidden: HashSet<String>,
}

/// What became of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Applied {
    /// Trained on (events of ids not admitted yet count as applied too).
    Trained,
    /// Skipped for a non-finite loss: no parameter changed.
    Skipped,
}

/// The model and everything the trainer keeps beside it.
pub(super) struct Learner {
    pub(super) model: Model,
    pub(super) popularity: Popularity,
    pub(super) dirty: Dirty,
    /// Items hidden by the `items` topic: never published, never in a snapshot or the
    /// popular list.
    pub(super) hidden: HashSet<String>,
    prequential: Prequential,
    batches_seen: u64,
    /// Minimum-count admission of new users and items.
    admit_users: Admission,
    admit_items: Admission,
    /// Newest event time seen (ms): expiry runs in event time, so a replay expires the
    /// same ids.
    pub(super) newest_ts: i64,
    min_count: u32,
    prequential_sample: usize,
    prequential_every_batches: u64,
}

impl Learner {
    pub(super) fn new(cfg: &TrainerConfig, model: Model) -> Self {
        Self {
            model,
            popularity: Popularity::new(cfg.popularity_half_life_s * 1000.0),
            dirty: Dirty::default(),
            hidden: HashSet::new(),
            prequential: Prequential::new(10, cfg.prequential_window),
            batches_seen: 0,
            admit_users: Admission::new(cfg.min_count, MAX_PENDING_IDS),
            admit_items: Admission::new(cfg.min_count, MAX_PENDING_IDS),
            newest_ts: i64::MIN,
            min_count: cfg.min_count,
            prequential_sample: cfg.prequential_sample,
            prequential_every_batches: cfg.prequential_every_batches,
        }
    }

    /// Applies one micro-batch: admission, then (every `prequential_every_batches`
    /// batches) a sample of its events ranked by the model as it was before them, the
    /// model's step, and on success the popularity counts and the rows and recent items
    /// to publish. Counts land in `stats`.
    pub(super) fn train(&mut self, batch: Vec<Event>, stats: &TrainerStats) -> Result<Applied> {
        if let Some(newest) = batch.iter().map(|e| e.ts).max() {
            self.newest_ts = self.newest_ts.max(newest);
        }
        let batch = self.admitted(batch, stats);
        if batch.is_empty() {
            return Ok(Applied::Trained);
        }
        let sample = if self.prequential_sample > 0
            && self
                .batches_seen
                .is_multiple_of(self.prequential_every_batches)
        {
            self.prequential_sample
        } else {
            0
        };
        self.batches_seen += 1;
        if sample > 0 {
            self.score(&batch, sample, stats);
        }
        let started = Instant::now();
        let (step, user_rows, item_rows) = self.model.train_events(&batch)?;
        stats
            .train_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        if step.skipped {
            stats.batches_skipped.fetch_add(1, Ordering::Relaxed);
            stats
                .events_skipped
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            warn!(events = batch.len(), "non-finite loss; batch skipped");
            return Ok(Applied::Skipped);
        }
        stats
            .events_trained
            .fetch_add(step.events as u64, Ordering::Relaxed);
        stats
            .last_loss_bits
            .store(u64::from(step.loss.to_bits()), Ordering::Relaxed);
        debug!(events = step.events, loss = step.loss, "trained batch");
        self.dirty.users.extend(user_rows);
        self.dirty.items.extend(item_rows);
        for e in &batch {
            let (Some(u), Some(i)) = (
                self.model.user_ids().get(&e.user_id),
                self.model.item_ids().get(&e.item_id),
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
        Ok(Applied::Trained)
    }

    /// The events whose user and item are admitted (`trainer.min_count`).
    fn admitted(&mut self, batch: Vec<Event>, stats: &TrainerStats) -> Vec<Event> {
        if self.min_count <= 1 {
            return batch;
        }
        let before = batch.len();
        let model = &self.model;
        let (users, items) = (&mut self.admit_users, &mut self.admit_items);
        let admitted: Vec<Event> = batch
            .into_iter()
            .filter(|e| {
                let u = users.admit(&e.user_id, model.user_ids().get(&e.user_id).is_some());
                let i = items.admit(&e.item_id, model.item_ids().get(&e.item_id).is_some());
                u && i
            })
            .collect();
        stats
            .events_not_admitted
            .fetch_add((before - admitted.len()) as u64, Ordering::Relaxed);
        admitted
    }

    /// Test, then train: `sample` events evenly spaced through the batch, ranked by the
    /// model as it is before it sees them.
    fn score(&mut self, batch: &[Event], sample: usize, stats: &TrainerStats) {
        let step = batch.len().div_ceil(sample).max(1);
        let picked: Vec<&Event> = batch.iter().step_by(step).collect();
        match self.model.ranks(&picked) {
            Ok(ranks) if !ranks.is_empty() => {
                for r in ranks {
                    self.prequential.push(r);
                }
                let (hr, ndcg) = (self.prequential.hit_rate(), self.prequential.ndcg());
                stats
                    .prequential_hr_bits
                    .store(hr.to_bits(), Ordering::Relaxed);
                stats
                    .prequential_ndcg_bits
                    .store(ndcg.to_bits(), Ordering::Relaxed);
                stats
                    .prequential_scored
                    .store(self.prequential.scored(), Ordering::Relaxed);
                debug!(hr_at_10 = hr, ndcg_at_10 = ndcg, "prequential");
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "prequential scoring failed"),
        }
    }

    /// Expires users and items unseen for `expire_after_s` before the newest event:
    /// their rows are freed for new ids and leave the popular list. Returns the expired
    /// item ids, which need tombstones.
    pub(super) fn expire(&mut self, expire_after_s: u64, stats: &TrainerStats) -> Vec<String> {
        if self.newest_ts == i64::MIN {
            return Vec::new();
        }
        let cutoff = self
            .newest_ts
            .saturating_sub((expire_after_s as i64).saturating_mul(1000));
        let expired = self.model.expire(cutoff);
        if expired.is_empty() {
            return Vec::new();
        }
        for &(row, _) in &expired.items {
            self.popularity.reset(row);
            self.dirty.items.remove(&row);
        }
        for &(row, _) in &expired.users {
            self.dirty.users.remove(&row);
            self.dirty.new_items.remove(&row);
        }
        stats
            .users_expired
            .fetch_add(expired.users.len() as u64, Ordering::Relaxed);
        stats
            .items_expired
            .fetch_add(expired.items.len() as u64, Ordering::Relaxed);
        info!(
            users = expired.users.len(),
            items = expired.items.len(),
            cutoff_ms = cutoff,
            "expired ids"
        );
        expired.items.into_iter().map(|x| x.1).collect()
    }

    /// Applies one item-metadata message: hiding an item queues a tombstone and keeps
    /// its vector out of every later publish and snapshot; showing it again republishes
    /// its vector.
    pub(super) fn item_meta(&mut self, meta: ItemMeta, stats: &TrainerStats) {
        stats.item_updates.fetch_add(1, Ordering::Relaxed);
        self.model
            .set_item_categories(&meta.item_id, &meta.categories);
        if meta.hidden {
            if self.hidden.insert(meta.item_id.clone()) {
                info!(item = %meta.item_id, "item hidden");
                self.dirty.hidden.insert(meta.item_id);
            }
        } else if self.hidden.remove(&meta.item_id) {
            info!(item = %meta.item_id, "item shown again");
            self.dirty.hidden.remove(&meta.item_id);
            if let Some(row) = self.model.item_ids().get(&meta.item_id) {
                self.dirty.items.insert(row);
            }
        }
        stats
            .items_hidden
            .store(self.hidden.len() as u64, Ordering::Relaxed);
    }

    /// Rows of the hidden items the model knows.
    pub(super) fn hidden_rows(&self) -> HashSet<u32> {
        self.hidden
            .iter()
            .filter_map(|id| self.model.item_ids().get(id))
            .collect()
    }
}
