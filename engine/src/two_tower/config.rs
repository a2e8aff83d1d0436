//! Settings of the two-tower model (`[model.two_tower]`).

use serde::{Deserialize, Serialize};

use crate::loss::{LossKind, Sampling, SharedSettings};
use crate::{EngineError, Result};

/// Hyper-parameters of the two-tower model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TwoTowerConfig {
    pub dim: usize,
    /// Width of each tower's hidden layer.
    pub hidden: usize,
    /// The user tower averages the embeddings of the user's last `history_len` items.
    pub history_len: usize,
    /// Adagrad learning rate of the id and category tables.
    pub learning_rate: f32,
    /// Adam learning rate of the MLPs.
    pub dense_learning_rate: f64,
    pub init_scale: f32,
    /// Outputs are unit vectors, so logits are cosines divided by this.
    pub temperature: f32,
    pub l2: f32,
    pub logq_correction: bool,
    pub loss: LossKind,
    /// On the default CPU device, the softmax over the towers' outputs and its gradient
    /// come from [`crate::fused`]; burn's autodiff then only runs the towers. false: the
    /// whole step on burn autodiff.
    pub fused_cpu_step: bool,
    /// As [`crate::mf::MfConfig::negatives`].
    pub negatives: usize,
    pub seed: u64,
}

impl Default for TwoTowerConfig {
    fn default() -> Self {
        Self {
            dim: 64,
            hidden: 128,
            history_len: 10,
            learning_rate: 0.05,
            dense_learning_rate: 1e-3,
            init_scale: 0.1,
            temperature: 0.2,
            l2: 1e-5,
            logq_correction: true,
            loss: LossKind::Softmax,
            fused_cpu_step: true,
            negatives: 2048,
            seed: 17,
        }
    }
}

impl TwoTowerConfig {
    /// Checks ranges; the error names the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: &str| {
            Err(EngineError::Config(format!("model.two_tower.{key}: {why}")))
        };
        SharedSettings {
            section: "model.two_tower",
            dim: self.dim,
            learning_rate: self.learning_rate,
            init_scale: self.init_scale,
            temperature: self.temperature,
            l2: self.l2,
            negatives: self.negatives,
        }
        .validate()?;
        if self.hidden == 0 || self.hidden > 8192 {
            return bad("hidden", "must be in 1..=8192");
        }
        if self.history_len > 200 {
            return bad("history_len", "must be at most 200");
        }
        if !(self.dense_learning_rate > 0.0 && self.dense_learning_rate.is_finite()) {
            return bad("dense_learning_rate", "must be a positive number");
        }
        Ok(())
    }

    pub(super) fn sampling(&self) -> Sampling {
        Sampling {
            kind: self.loss,
            negatives: self.negatives,
            logq_correction: self.logq_correction,
            temperature: self.temperature,
            seed: self.seed.wrapping_add(2),
        }
    }
}
