//! The online trainer: consume `events`, micro-batch, train a step on a blocking thread,
//! publish changed vectors every `publish_interval`. A message that fails to parse or
//! validate is counted, logged and sent to the dead-letter topic with its source
//! partition, offset and reason; it never stops the loop.
//!
//! - `trainer.rs`: the trainer and its loop;
//! - `learner.rs`: what one micro-batch does to the model (admission, prequential
//!   scoring, the step, popularity), without Kafka;
//! - `ingest.rs`: parsing messages, dead letters;
//! - `publish.rs`, `snapshot.rs`, `checkpoint.rs`, `generation.rs`: publishing vectors,
//!   base index snapshots, checkpoints with offsets, generation switches;
//! - `progress.rs`: the stream position per partition; `stats.rs`: the counters;
//!   `health.rs`: the readiness checks.

mod checkpoint;
mod generation;
pub mod health;
mod ingest;
pub(crate) mod learner;
mod progress;
mod publish;
mod snapshot;
pub(crate) mod stats;
mod trainer;

pub use health::{Check, Health};
pub use stats::TrainerStats;
pub use trainer::OnlineTrainer;
