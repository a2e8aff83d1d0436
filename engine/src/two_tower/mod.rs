//! Two-tower model: MF's id embeddings plus features, through small MLPs, trained online.
//!
//! - User tower: `normalize(e_u + MLP_u([e_u, mean(e_i for the user's last N items)]))`.
//! - Item tower: `normalize(e_i + MLP_i([e_i, mean(e_c for the item's categories)]))`.
//! - Score: the dot product of the two outputs divided by the temperature.
//!
//! The id and category tables keep MF's sparse path: a step gathers only the rows it
//! touches into leaf tensors that require grad and applies row-wise Adagrad to them. The
//! MLPs are burn `Linear` modules updated by burn's Adam. The residual form means a fresh
//! tower starts as MF on normalised embeddings (the last layer of each MLP starts at zero),
//! which is the identity-tower case.
//!
//! - `config.rs`: the settings; `towers.rs`: the two MLPs;
//! - `model.rs`: the model's state, ids, histories, categories, expiry, serving vectors;
//! - `forward.rs`: both towers' forward pass; `step.rs`: one training step;
//! - `parts.rs`: the complete state for checkpoints.

mod config;
mod forward;
mod model;
mod parts;
mod step;
mod towers;

pub use config::TwoTowerConfig;
pub use model::{MAX_CATEGORIES, TwoTowerModel};
pub use parts::{DENSE_ORDER, TwoTowerParts};
pub use towers::Towers;

#[cfg(test)]
mod tests;
