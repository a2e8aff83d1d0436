//! Trainer settings (the `[trainer]` section of the config file).

use serde::{Deserialize, Serialize};

use crate::{Result, TrainerError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainerConfig {
    /// Kafka bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Where `recsys train` serves `/healthz`, `/readyz` and `/metrics`; empty: nowhere.
    /// (`recsys run` reports the same on `serving.bind`.)
    pub admin_bind: String,
    pub topic: String,
    pub dead_letter_topic: String,
    pub group_id: String,
    /// Events per training step.
    pub batch_size: usize,
    /// A partial batch is trained after waiting this long for more events.
    pub batch_timeout_ms: u64,
    /// Changed item vectors and the popular list are published at most this often; user
    /// vectors go out after every step.
    pub publish_interval_ms: u64,
    /// Recent items kept per user (serving excludes them from recommendations).
    pub history_len: usize,
    /// Time to live of user vectors in the store, seconds.
    pub user_vector_ttl_s: u64,
    /// Half-life of the popularity counts, seconds.
    pub popularity_half_life_s: f64,
    /// Popular items published for the fallback path.
    pub popular_items: usize,
    /// Model generation this trainer evolves.
    pub generation: u64,
    /// Item metadata (hidden flag, categories); empty: not consumed.
    pub items_topic: String,
    /// Compacted topic of item vectors that serving replicas follow.
    pub item_vectors_topic: String,
    /// Compacted topic of the popular list.
    pub popular_topic: String,
    /// Directory of base index snapshots (shared with the replicas); empty: none written.
    pub snapshot_dir: String,
    /// A snapshot is written at most this often (and once more on shutdown).
    pub snapshot_interval_ms: u64,
    /// Snapshots kept per generation.
    pub snapshot_keep: usize,
    /// Directory of checkpoints (model + stream position); empty: none written, and a
    /// restart starts from the committed group offsets with a fresh model.
    pub checkpoint_dir: String,
    /// The models directory of nightly retrains (`models/CURRENT`, `models/g{N}/`);
    /// empty: off. When set, the trainer evolves the current generation (`generation` only
    /// names the first one, when nothing is current yet), keeps its checkpoints in
    /// `models/g{N}` and its snapshots in `models/g{N}/snapshots`, and follows a flip of
    /// `CURRENT`: it warm-starts from the new generation's checkpoint and replays the
    /// events after that checkpoint's offsets. `checkpoint_dir` and `snapshot_dir` must
    /// then be empty.
    pub models_dir: String,
    /// How often `models/CURRENT` is read.
    pub generation_poll_ms: u64,
    /// A checkpoint is written at most this often, and on shutdown.
    pub checkpoint_interval_ms: u64,
    pub checkpoint_keep: usize,
    /// Users and items unseen for this long, in event time, are expired: their ids are
    /// forgotten, their rows reused, expired items get tombstones. 0: never.
    pub expire_after_s: u64,
    /// A new user or item gets a row only once it has appeared in this many events.
    pub min_count: u32,
    /// Prequential evaluation: every `prequential_every_batches` batches, this many of the
    /// batch's events are ranked against all items before training on them (0: off).
    /// Full ranking costs O(items × dim) per event (and, for the two-tower model, one
    /// item-tower pass over the catalog per evaluated batch).
    pub prequential_sample: usize,
    pub prequential_every_batches: u64,
    /// HitRate@10 and NDCG@10 are averaged over the last this many ranked events.
    pub prequential_window: usize,
    /// After each step, solve the batch's users' vectors outright (MF only) against
    /// the item vectors from their recent items: the weighted square loss with this
    /// confidence of an observed item over the rest (0: off), ...
    pub refit_alpha: f32,
    /// ... this L2 penalty, ...
    pub refit_lambda: f32,
    /// ... and at most this many of their most recent items.
    pub refit_items: usize,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        Self {
            brokers: "localhost:9092".into(),
            admin_bind: "127.0.0.1:8081".into(),
            topic: recsys_schemas::contract::EVENTS_TOPIC.into(),
            dead_letter_topic: recsys_schemas::contract::DEAD_LETTER_TOPIC.into(),
            group_id: "recsys-trainer".into(),
            batch_size: 1024,
            batch_timeout_ms: 200,
            publish_interval_ms: 1000,
            history_len: 500,
            user_vector_ttl_s: 30 * 86_400,
            popularity_half_life_s: 7.0 * 86_400.0,
            popular_items: 1000,
            generation: 1,
            items_topic: recsys_schemas::contract::ITEMS_TOPIC.into(),
            item_vectors_topic: recsys_schemas::contract::ITEM_VECTORS_TOPIC.into(),
            popular_topic: recsys_schemas::contract::POPULAR_TOPIC.into(),
            snapshot_dir: String::new(),
            snapshot_interval_ms: 300_000,
            snapshot_keep: 3,
            checkpoint_dir: String::new(),
            models_dir: String::new(),
            generation_poll_ms: 1_000,
            checkpoint_interval_ms: 60_000,
            checkpoint_keep: 3,
            expire_after_s: 0,
            min_count: 1,
            prequential_sample: 32,
            prequential_every_batches: 10,
            prequential_window: 10_000,
            refit_alpha: 3.0,
            refit_lambda: 30.0,
            refit_items: 10,
        }
    }
}

impl TrainerConfig {
    /// Checks every setting; the error names the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: &str| Err(TrainerError::Config(format!("trainer.{key}: {why}")));
        if self.brokers.trim().is_empty() {
            return bad("brokers", "must not be empty");
        }
        if self.topic.is_empty() {
            return bad("topic", "must not be empty");
        }
        if self.dead_letter_topic.is_empty() || self.dead_letter_topic == self.topic {
            return bad(
                "dead_letter_topic",
                "must be set and differ from trainer.topic",
            );
        }
        if self.group_id.is_empty() {
            return bad("group_id", "must not be empty");
        }
        if !(1..=65_536).contains(&self.batch_size) {
            return bad("batch_size", "must be in 1..=65536");
        }
        if self.batch_timeout_ms == 0 {
            return bad("batch_timeout_ms", "must be positive");
        }
        if self.publish_interval_ms == 0 {
            return bad("publish_interval_ms", "must be positive");
        }
        if self.history_len == 0 {
            return bad("history_len", "must be positive");
        }
        if self.user_vector_ttl_s == 0 {
            return bad("user_vector_ttl_s", "must be positive");
        }
        if self.popularity_half_life_s.is_nan() || self.popularity_half_life_s <= 0.0 {
            return bad("popularity_half_life_s", "must be positive");
        }
        if !self.items_topic.is_empty()
            && [&self.topic, &self.dead_letter_topic].contains(&&self.items_topic)
        {
            return bad("items_topic", "must differ from the event topics");
        }
        let topics = [&self.topic, &self.dead_letter_topic, &self.items_topic];
        if self.item_vectors_topic.is_empty() || topics.contains(&&self.item_vectors_topic) {
            return bad(
                "item_vectors_topic",
                "must be set and differ from the event topics",
            );
        }
        if self.popular_topic.is_empty()
            || topics.contains(&&self.popular_topic)
            || self.popular_topic == self.item_vectors_topic
        {
            return bad(
                "popular_topic",
                "must be set and differ from the other topics",
            );
        }
        if self.snapshot_interval_ms == 0 {
            return bad("snapshot_interval_ms", "must be positive");
        }
        if self.snapshot_keep == 0 {
            return bad("snapshot_keep", "must be at least 1");
        }
        if self.checkpoint_interval_ms == 0 {
            return bad("checkpoint_interval_ms", "must be positive");
        }
        if !self.models_dir.is_empty() {
            for (key, value) in [
                ("checkpoint_dir", &self.checkpoint_dir),
                ("snapshot_dir", &self.snapshot_dir),
            ] {
                if !value.is_empty() {
                    return bad(
                        key,
                        "must be empty when trainer.models_dir is set (it lives under \
                         models_dir/g{generation})",
                    );
                }
            }
        }
        if self.generation_poll_ms == 0 {
            return bad("generation_poll_ms", "must be positive");
        }
        if self.checkpoint_keep == 0 {
            return bad("checkpoint_keep", "must be at least 1");
        }
        if self.min_count == 0 {
            return bad("min_count", "must be at least 1");
        }
        if self.expire_after_s > 100 * 365 * 86_400 {
            return bad("expire_after_s", "must be at most 100 years");
        }
        if self.prequential_sample > 65_536 {
            return bad("prequential_sample", "must be at most 65536");
        }
        if self.prequential_every_batches == 0 {
            return bad("prequential_every_batches", "must be positive");
        }
        if self.prequential_window == 0 {
            return bad("prequential_window", "must be positive");
        }
        if !(self.refit_alpha >= 0.0 && self.refit_alpha.is_finite()) {
            return bad("refit_alpha", "must be zero or positive");
        }
        if !(self.refit_lambda > 0.0 && self.refit_lambda.is_finite()) {
            return bad("refit_lambda", "must be positive");
        }
        if self.refit_items == 0 {
            return bad("refit_items", "must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_errors_name_the_key() {
        TrainerConfig::default().validate().unwrap();
        let cfg = TrainerConfig {
            batch_size: 0,
            ..TrainerConfig::default()
        };
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("trainer.batch_size")
        );
    }
}
