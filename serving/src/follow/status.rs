//! What the follower has done, for `/readyz` and the metrics.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// What the follower has done, readable by `/readyz` and the metrics.
#[derive(Debug, Default)]
pub struct FollowStatus {
    pub(super) ready: AtomicBool,
    /// Item changes (upserts and tombstones) applied.
    pub applied: AtomicU64,
    /// Batches swapped in.
    pub batches: AtomicU64,
    /// Messages that could not be decoded or applied (logged, skipped).
    pub rejected: AtomicU64,
    /// Valid item changes lost because their batch could not be applied, since the catalog
    /// was last loaded whole (a snapshot): while above 0 the index is behind its topic and
    /// `/readyz` says so.
    pub dropped: AtomicU64,
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

    /// Whether the catalog holds every change it has read (nothing dropped).
    pub fn is_complete(&self) -> bool {
        self.dropped.load(Ordering::Relaxed) == 0
    }

    /// For processes that fill the catalog some other way (tests, in-process hand-over).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }
}
