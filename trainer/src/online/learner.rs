//! What the trainer does with one micro-batch, without Kafka: admission of new ids, the
//! prequential test-then-train scoring, the model's step, the decayed popularity, and
//! the rows and recent items to publish; also expiry and item metadata. The Kafka loop
//! runs this on a blocking thread; nothing here waits on the network.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Instant;

use recsys_engine::metrics::Prequential;
use recsys_engine::model::Model;
use recsys_engine::popularity::Popularity;
use recsys_index::ids::Admission;
use recsys_schemas::{Event, ItemMeta};
use tracing::{debug, info, warn};

use super::stats::TrainerStats;
use crate::prequential::{ServedState, rank_as_served};
use crate::{Result, TrainerConfig};

/// Pending (not yet admitted) ids remembered per kind under `trainer.min_count`.
const MAX_PENDING_IDS: usize = 1_000_000;

/// Rows changed since the last publish, and the users' new items.
#[derive(Default)]
pub(crate) struct Dirty {
    pub(crate) users: HashSet<u32>,
    pub(crate) items: HashSet<u32>,
    pub(crate) new_items: HashMap<u32, Vec<String>>,
    /// Items hidden since the last publish: tombstones to send.
    pub(crate) hidden: HashSet<String>,
}

impl Dirty {
    /// Gives back recent items a failed publish took: they go before any that arrived
    /// since, so the next publish sends each user's items oldest first.
    pub(crate) fn restore_new_items(
        &mut self,
        taken: impl IntoIterator<Item = (u32, Vec<String>)>,
    ) {
        for (user, mut items) in taken {
            let pending = self.new_items.entry(user).or_default();
            items.append(pending);
            *pending = items;
        }
    }
}

/// What became of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Trained on (events of ids not admitted yet count as applied too).
    Trained,
    /// Skipped for a non-finite loss: no parameter changed.
    Skipped,
}

/// The model and everything the trainer keeps beside it.
pub(crate) struct Learner {
    pub(crate) model: Model,
    pub(crate) popularity: Popularity,
    pub(crate) dirty: Dirty,
    /// Items hidden by the `items` topic: never published, never in a snapshot or the
    /// popular list.
    pub(crate) hidden: HashSet<String>,
    prequential: Prequential,
    /// Each user's recent item rows, newest first (at most `history_len`, each once):
    /// what serving excludes and folds in, for the prequential scoring. Kept only while
    /// prequential scoring is on.
    recent: HashMap<u32, VecDeque<u32>>,
    history_len: usize,
    batches_seen: u64,
    /// Minimum-count admission of new users and items.
    admit_users: Admission,
    admit_items: Admission,
    /// Newest event time seen (ms): expiry runs in event time, so a replay expires the
    /// same ids.
    pub(crate) newest_ts: i64,
    min_count: u32,
    prequential_sample: usize,
    prequential_every_batches: u64,
    refit: Option<(f32, f32, usize)>,
    /// `batch_size`: a short batch's step is scaled to its share of a full one
    /// ([`Model::set_nominal_batch`]), so a slow stream does not take a full step per
    /// handful of events.
    nominal_batch: f32,
}

impl Learner {
    pub(crate) fn new(cfg: &TrainerConfig, model: Model) -> Self {
        Self {
            model,
            popularity: Popularity::new(cfg.popularity_half_life_s * 1000.0),
            dirty: Dirty::default(),
            hidden: HashSet::new(),
            prequential: Prequential::new(10, cfg.prequential_window),
            recent: HashMap::new(),
            history_len: cfg.history_len,
            batches_seen: 0,
            admit_users: Admission::new(cfg.min_count, MAX_PENDING_IDS),
            admit_items: Admission::new(cfg.min_count, MAX_PENDING_IDS),
            newest_ts: i64::MIN,
            min_count: cfg.min_count,
            prequential_sample: cfg.prequential_sample,
            prequential_every_batches: cfg.prequential_every_batches,
            refit: (cfg.refit_alpha > 0.0).then_some((
                cfg.refit_alpha,
                cfg.refit_lambda,
                cfg.refit_items,
            )),
            nominal_batch: cfg.batch_size as f32,
        }
    }

    /// Applies one micro-batch: admission, then (every `prequential_every_batches`
    /// batches) a sample of its events ranked by the model as it was before them, the
    /// model's step, and on success the popularity counts and the rows and recent items
    /// to publish. Counts land in `stats`.
    pub(crate) fn train(&mut self, batch: Vec<Event>, stats: &TrainerStats) -> Result<Applied> {
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
        // Set each time: a checkpoint or a new generation may have replaced the model.
        self.model.set_nominal_batch(self.nominal_batch);
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
            if self.prequential_sample > 0 || self.refit.is_some() {
                let recent = self.recent.entry(u).or_default();
                recent.retain(|&r| r != i);
                recent.push_front(i);
                recent.truncate(self.history_len);
            }
        }
        self.refit_users(&batch);
        Ok(Applied::Trained)
    }

    /// With `trainer.refit_alpha`, the batch's users' vectors solved outright from their
    /// recent items.
    fn refit_users(&mut self, batch: &[Event]) {
        let Some((alpha, lambda, window)) = self.refit else {
            return;
        };
        let Model::Mf(m) = &mut self.model else {
            return;
        };
        let mut seen = HashSet::new();
        let users: Vec<(u32, Vec<u32>)> = batch
            .iter()
            .filter_map(|e| m.user_ids().get(&e.user_id))
            .filter(|u| seen.insert(*u))
            .filter_map(|u| {
                let items: Vec<u32> = self.recent.get(&u)?.iter().take(window).copied().collect();
                Some((u, items))
            })
            .collect();
        let refitted = m.refit_users(&users, alpha, lambda);
        self.dirty.users.extend(refitted);
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
    /// model as it is before it sees them, the way serving would answer their users
    /// ([`rank_as_served`]: own vector, else fold-in, else popularity; recent items
    /// excluded).
    fn score(&mut self, batch: &[Event], sample: usize, stats: &TrainerStats) {
        let step = batch.len().div_ceil(sample).max(1);
        let picked: Vec<&Event> = batch.iter().step_by(step).collect();
        let state = match LiveState::of(&self.model, &self.popularity) {
            Ok(state) => state,
            Err(e) => {
                warn!(error = %e, "prequential scoring failed");
                return;
            }
        };
        let ids = self.model.item_ids();
        for e in picked {
            let user = self.model.user_ids().get(&e.user_id);
            let vector = user.and_then(|_| self.model.user_vector(&e.user_id));
            let recent = user
                .and_then(|u| self.recent.get(&u))
                .into_iter()
                .flatten()
                .filter_map(|&r| ids.id(r));
            let ranked = rank_as_served(&state, vector.as_deref(), recent, &e.item_id);
            self.prequential.push(ranked.rank);
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

    /// Expires users and items unseen for `expire_after_s` before the newest event:
    /// their rows are freed for new ids and leave the popular list. Returns the expired
    /// item ids, which need tombstones.
    pub(crate) fn expire(&mut self, expire_after_s: u64, stats: &TrainerStats) -> Vec<String> {
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
            self.recent.remove(&row);
        }
        if !expired.items.is_empty() && !self.recent.is_empty() {
            let gone: HashSet<u32> = expired.items.iter().map(|x| x.0).collect();
            self.recent
                .values_mut()
                .for_each(|r| r.retain(|i| !gone.contains(i)));
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
    pub(crate) fn item_meta(&mut self, meta: ItemMeta, stats: &TrainerStats) {
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
    pub(crate) fn hidden_rows(&self) -> HashSet<u32> {
        self.hidden
            .iter()
            .filter_map(|id| self.model.item_ids().get(id))
            .collect()
    }
}

/// The live model as serving sees it right after a publish: every item's vector and
/// popularity, by the model's item rows.
struct LiveState<'a> {
    model: &'a Model,
    popularity: &'a Popularity,
    vectors: Vec<f32>,
    live: Vec<bool>,
}

impl<'a> LiveState<'a> {
    fn of(model: &'a Model, popularity: &'a Popularity) -> Result<Self> {
        let ids = model.item_ids();
        let rows: Vec<u32> = (0..ids.len() as u32).collect();
        Ok(Self {
            vectors: model.item_vectors(&rows)?,
            live: rows.iter().map(|&r| ids.id(r).is_some()).collect(),
            model,
            popularity,
        })
    }
}

impl ServedState for LiveState<'_> {
    fn dim(&self) -> usize {
        self.model.dim()
    }

    fn items(&self) -> usize {
        self.live.len()
    }

    fn item_vector(&self, row: u32) -> Option<&[f32]> {
        let d = self.model.dim();
        let r = row as usize;
        self.live
            .get(r)
            .copied()
            .unwrap_or(false)
            .then(|| &self.vectors[r * d..(r + 1) * d])
    }

    fn popularity(&self, row: u32) -> f64 {
        self.popularity.score(row)
    }

    fn row(&self, item: &str) -> Option<u32> {
        self.model.item_ids().get(item)
    }
}
