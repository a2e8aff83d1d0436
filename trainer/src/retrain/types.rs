//! The settings of one retrain and its report (`report.json`).

use std::path::PathBuf;

use recsys_engine::device::Backend;
use recsys_engine::eval::Metrics;
use recsys_engine::model::ModelConfig;
use recsys_engine::train::EpochStats;
use recsys_index::IndexConfig;
use serde::Serialize;

/// Settings of one retrain.
#[derive(Debug, Clone)]
pub struct RetrainOptions {
    pub from: PathBuf,
    /// Days of the window (the newest ones in the archive); the last is the test day.
    pub days: usize,
    pub out: PathBuf,
    pub models: PathBuf,
    /// Passes of the batch recipe; `None`: the model's default
    /// ([`recsys_engine::train::default_passes`]).
    pub epochs: Option<usize>,
    pub batch: usize,
    /// The new model is published only if its NDCG@10 is at least the current one's
    /// minus this.
    pub margin: f64,
    pub force: bool,
    /// Rows per Parquet read (and shuffle window).
    pub read_rows: usize,
    /// At most this many test users are scored (a seeded sample; each still ranks the
    /// full catalog): full ranking costs O(items × dim) per user.
    pub max_test_users: usize,
    pub seed: u64,
    pub model: ModelConfig,
    pub index: IndexConfig,
    pub backend: Backend,
    /// Events topic name, for the checkpoint's offset keys.
    pub topic: String,
    pub progress: bool,
}

/// What `retrain` did and why; `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RetrainReport {
    pub published: bool,
    pub forced: bool,
    /// Why it was or was not published.
    pub decision: String,
    pub new_generation: u64,
    pub current_generation: Option<u64>,
    pub new: Metrics,
    pub current: Option<Metrics>,
    pub popularity: Metrics,
    pub model_kind: String,
    pub train_days: Vec<String>,
    pub test_day: String,
    /// Training events per epoch.
    pub events: u64,
    pub users: usize,
    pub items: usize,
    pub test_users: usize,
    /// Users eligible for the test before sampling down to `max_test_users`.
    pub eligible_test_users: usize,
    pub epochs: Vec<EpochStats>,
    /// Mean over epochs of events per second.
    pub events_per_s: f64,
    pub train_seconds: f64,
    pub total_seconds: f64,
    pub peak_rss_bytes: u64,
    pub margin: f64,
    /// User vectors written under the new generation's keys (0 without a user store).
    pub users_written: usize,
    /// Test-day events the published model was also trained on (per epoch), after the
    /// evaluation; 0 when not published.
    pub refit_events: u64,
    pub plots: Vec<String>,
}
