//! The trainer's counters, readable while it runs (the metrics module exports them).

use std::sync::atomic::{AtomicU64, Ordering};

use recsys_schemas::histogram::{Histogram, LagBounds};

use super::health::Health;

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
    /// How old an event is when it is applied: now − its `ts`.
    pub event_lag: Histogram<LagBounds>,
    /// From the arrival of a batch's first event to the publish of its vectors (the
    /// oldest unpublished batch of each publish).
    pub publish_delay: Histogram<LagBounds>,
    /// What `/readyz` reads.
    pub health: Health,
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
