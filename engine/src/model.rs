//! The model the trainer runs, chosen in config: MF or two-tower, behind one interface.

use burn::tensor::Device;
use recsys_schemas::Event;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::mf::{MfConfig, MfModel, StepStats};
use crate::two_tower::{TwoTowerConfig, TwoTowerModel};
use recsys_index::ids::{Expired, IdMap};

/// Which model to train.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    #[default]
    Mf,
    TwoTower,
}

/// The `[model]` section: `kind`, then each model's settings in `[model.mf]` and
/// `[model.two_tower]` (only the chosen kind's are used).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub kind: ModelKind,
    pub mf: MfConfig,
    pub two_tower: TwoTowerConfig,
}

impl ModelConfig {
    pub fn validate(&self) -> Result<()> {
        match self.kind {
            ModelKind::Mf => self.mf.validate(),
            ModelKind::TwoTower => self.two_tower.validate(),
        }
    }
}

/// A trained or training model. (Moved between threads by value, never copied in bulk:
/// the size difference of the variants does not matter.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Model {
    Mf(MfModel),
    TwoTower(TwoTowerModel),
}

impl From<MfModel> for Model {
    fn from(m: MfModel) -> Self {
        Self::Mf(m)
    }
}

impl From<TwoTowerModel> for Model {
    fn from(m: TwoTowerModel) -> Self {
        Self::TwoTower(m)
    }
}

impl Model {
    /// A fresh model of the configured kind, training on `device` (autodiff).
    pub fn new(cfg: &ModelConfig, device: Device) -> Result<Self> {
        Ok(match cfg.kind {
            ModelKind::Mf => Self::Mf(MfModel::new(cfg.mf.clone(), device)?),
            ModelKind::TwoTower => {
                Self::TwoTower(TwoTowerModel::new(cfg.two_tower.clone(), device)?)
            }
        })
    }

    /// Changes the learning rate of the embedding tables from the next step on.
    pub fn set_learning_rate(&mut self, lr: f32) {
        match self {
            Self::Mf(m) => m.set_learning_rate(lr),
            Self::TwoTower(m) => m.set_learning_rate(lr),
        }
    }

    /// MF: see [`MfModel::set_nominal_batch`]. (The two-tower model's steps stay means
    /// over their batch.)
    pub fn set_nominal_batch(&mut self, nominal: f32) {
        if let Self::Mf(m) = self {
            m.set_nominal_batch(nominal);
        }
    }

    pub fn kind(&self) -> ModelKind {
        match self {
            Self::Mf(_) => ModelKind::Mf,
            Self::TwoTower(_) => ModelKind::TwoTower,
        }
    }

    pub fn device(&self) -> &Device {
        match self {
            Self::Mf(m) => m.device(),
            Self::TwoTower(m) => m.device(),
        }
    }

    pub fn dim(&self) -> usize {
        match self {
            Self::Mf(m) => m.dim(),
            Self::TwoTower(m) => m.dim(),
        }
    }

    pub fn user_ids(&self) -> &IdMap {
        match self {
            Self::Mf(m) => m.user_ids(),
            Self::TwoTower(m) => m.user_ids(),
        }
    }

    pub fn item_ids(&self) -> &IdMap {
        match self {
            Self::Mf(m) => m.item_ids(),
            Self::TwoTower(m) => m.item_ids(),
        }
    }

    pub fn table_bytes(&self) -> usize {
        match self {
            Self::Mf(m) => m.table_bytes(),
            Self::TwoTower(m) => m.table_bytes(),
        }
    }

    /// One training step; returns the stats and the touched rows (users, items).
    pub fn train_events(&mut self, events: &[Event]) -> Result<(StepStats, Vec<u32>, Vec<u32>)> {
        match self {
            Self::Mf(m) => m.train_events(events),
            Self::TwoTower(m) => m.train_events(events),
        }
    }

    /// Expires users and items last seen before `cutoff_ms` and frees their rows.
    pub fn expire(&mut self, cutoff_ms: i64) -> Expired {
        match self {
            Self::Mf(m) => m.expire(cutoff_ms),
            Self::TwoTower(m) => m.expire(cutoff_ms),
        }
    }

    /// Item categories feed the two-tower item tower; MF has no features.
    pub fn set_item_categories(&mut self, item_id: &str, categories: &[String]) {
        if let Self::TwoTower(m) = self {
            m.set_item_categories(item_id, categories);
        }
    }

    /// Serving vectors of the given user rows, row-major.
    pub fn user_vectors(&self, rows: &[u32]) -> Result<Vec<f32>> {
        match self {
            Self::Mf(m) => Ok(rows
                .iter()
                .flat_map(|&r| m.user_vector_by_row(r).iter().copied())
                .collect()),
            Self::TwoTower(m) => m.user_vectors(rows),
        }
    }

    /// Serving vectors of the given item rows, row-major.
    pub fn item_vectors(&self, rows: &[u32]) -> Result<Vec<f32>> {
        match self {
            Self::Mf(m) => Ok(rows
                .iter()
                .flat_map(|&r| m.item_vector_by_row(r).iter().copied())
                .collect()),
            Self::TwoTower(m) => m.item_vectors(rows),
        }
    }

    /// The serving vector of a known user.
    pub fn user_vector(&self, user_id: &str) -> Option<Vec<f32>> {
        let row = self.user_ids().get(user_id)?;
        self.user_vectors(&[row]).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::cpu_autodiff_device;

    #[test]
    fn config_has_a_section_per_model() {
        let cfg: ModelConfig =
            toml_like(r#"{"kind":"two_tower","mf":{"dim":32},"two_tower":{"dim":16,"hidden":8}}"#);
        assert_eq!(cfg.kind, ModelKind::TwoTower);
        assert_eq!(cfg.mf.dim, 32);
        assert_eq!(cfg.two_tower.hidden, 8);
        let m = Model::new(&cfg, cpu_autodiff_device()).unwrap();
        assert_eq!(m.dim(), 16);
        assert_eq!(m.kind(), ModelKind::TwoTower);
    }

    fn toml_like(json: &str) -> ModelConfig {
        serde_json::from_str(json).unwrap()
    }
}
