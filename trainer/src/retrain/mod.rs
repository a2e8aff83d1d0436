//! `recsys retrain`: the nightly full retrain from the Parquet archive, with an offline
//! evaluation of the new model, the current generation and popularity side by side, a
//! quality gate, a report for people (`report.md`, `report.json`, PNG plots) and the
//! generation switch; `recsys rollback` switches back.
//!
//! Generations live under the models directory (`recsys_index::generations`). The
//! published checkpoint's offsets are the archive's committed offsets when the retrain
//! started (the cutoff), and the model has seen every archived event below them, so an
//! online trainer warm-started from it replays exactly the events after the cutoff.
//!
//! - `run.rs`: one retrain from start to end; `split.rs`: catalog and test set;
//!   `source.rs`: the archive as training events; `gate.rs`: the quality gate and
//!   rollback; `publish.rs`: writing a generation; `markdown.rs`, `plots.rs`: the report.

mod gate;
mod markdown;
mod plots;
mod publish;
mod run;
mod source;
mod split;
mod types;

pub use gate::rollback;
pub use run::{peak_rss_bytes, run};
pub use types::{RetrainOptions, RetrainReport};

#[cfg(test)]
mod tests;
