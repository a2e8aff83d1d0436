//! How a replica keeps its catalog fresh: load the newest valid base snapshot of its
//! generation, then follow the `item-vectors` topic from the offsets the snapshot
//! includes, applying deltas in small batches to a staging copy that is swapped in whole
//! (docs/DESIGN.md §4). The newest popular list comes from `item-popularity`.
//!
//! The replica is *ready* once it has applied every item-vector message that existed when
//! it started following: `/readyz` answers 503 until then.
//!
//! - `config.rs`: where item vectors come from; `status.rs`: readiness and counters;
//! - `follower.rs`: the follower; `run.rs`: its snapshot load and its loop;
//! - `batch.rs`: messages collected into a batch and applied to the catalog;
//! - `generation.rs`: following a flip of `models/CURRENT`.

mod batch;
mod config;
mod follower;
mod generation;
mod run;
mod status;

pub use config::FollowConfig;
pub use follower::ItemFollower;
pub use status::FollowStatus;
