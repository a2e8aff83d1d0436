//! The streaming evaluation (`recsys eval --stream`): Monolith's replay protocol
//! (arXiv 2209.07663 §3.1.2) with test-then-train scoring (Vinagre et al. 2014).
//!
//! All interactions in time order; the first `base_fraction` trains a base model with
//! the batch recipe; the rest is the stream, cut into micro-batches as the online trainer
//! cuts what it receives (at `trainer.batch_size` events, or when the next event comes
//! `trainer.batch_timeout_ms` or more of event time after a batch's first). Each batch
//! is first scored, every event of it (or a seeded sample) ranked as serving would
//! answer its user at that moment ([`crate::prequential::rank_as_served`]: the user's
//! published vector, else a fold-in of their recent items, else the popular list; recent
//! items never recommended), then learnt from. The arms differ only in their model:
//! `frozen` (the base, never updated), `online` (the base, updated by the online
//! trainer's own per-batch function), `online_scratch` (that function from an empty
//! model), `popularity` (no model). Histories and the popular list are not the model:
//! every arm reads the same ones, updated as the stream goes. What an arm serves is what
//! its trainer has published: with a sync interval, the changed vectors reach the arm
//! only that often, in event time.
//!
//! An event whose item is already among its user's recent items is learnt from but not
//! scored: serving never recommends it.
//!
//! - `run.rs`: the set-up (base model, arms) and the report; `driver.rs`: the replay;
//! - `arms.rs`: the models the replay evolves; `served.rs`: what serving holds per arm;
//! - `tally.rs`: the figures; `plot.rs`: NDCG@10 per shard as a PNG.

mod arms;
mod driver;
mod plot;
mod run;
mod served;
mod tally;

pub use arms::{Evolving, OnlineLearner};
pub use run::{ReplayOptions, StreamReport, SyncPoint, run};
pub use tally::{ArmReport, StreamMetrics};

#[cfg(test)]
mod tests;
