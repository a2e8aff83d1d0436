//! The `[serving.follow]` section: where a replica's item vectors come from.

use serde::{Deserialize, Serialize};

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
