//! The complete state of a two-tower model, for checkpoints, and the model restored
//! from it.

use burn::module::{Param, ParamId};
use burn::nn::Linear;
use burn::optim::AdamConfig;
use burn::tensor::{Device, Tensor, TensorData};
use recsys_index::ids::IdMap;

use super::config::TwoTowerConfig;
use super::model::{MAX_CATEGORIES, TwoTowerModel};
use super::towers::Towers;
use crate::loss::ItemFrequency;
use crate::table::{EmbeddingTable, TableParts};
use crate::{EngineError, Result};

/// The complete state of a [`TwoTowerModel`], for checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct TwoTowerParts {
    pub cfg: TwoTowerConfig,
    pub user_ids: Vec<String>,
    pub item_ids: Vec<String>,
    pub category_ids: Vec<String>,
    pub users: TableParts,
    pub items: TableParts,
    pub categories: TableParts,
    pub history: Vec<u32>,
    pub history_next: Vec<u8>,
    pub item_categories: Vec<u32>,
    /// The MLP tensors, flattened, in [`DENSE_ORDER`].
    pub dense: Vec<Vec<f32>>,
    /// Adam's state, as burn serialises it (burnpack), keyed by the fixed parameter ids.
    pub optimizer: Vec<u8>,
    pub freq: ItemFrequency,
    pub steps: u64,
    pub user_seen: Vec<u32>,
    pub item_seen: Vec<u32>,
}

/// The order of the MLP tensors in [`TwoTowerParts::dense`].
pub const DENSE_ORDER: [&str; 8] = [
    "user_hidden.weight",
    "user_hidden.bias",
    "user_out.weight",
    "user_out.bias",
    "item_hidden.weight",
    "item_hidden.bias",
    "item_out.weight",
    "item_out.bias",
];

impl TwoTowerModel {
    fn layers(&self) -> [&Linear; 4] {
        [
            &self.towers.user_hidden,
            &self.towers.user_out,
            &self.towers.item_hidden,
            &self.towers.item_out,
        ]
    }

    /// The model's state, copied.
    pub fn to_parts(&self) -> Result<TwoTowerParts> {
        let mut dense = Vec::with_capacity(DENSE_ORDER.len());
        for layer in self.layers() {
            dense.push(Self::flat(layer.weight.val())?);
            let bias = layer
                .bias
                .as_ref()
                .ok_or_else(|| EngineError::Tensor("layer without bias".into()))?;
            dense.push(Self::flat(bias.val())?);
        }
        let optimizer = self
            .optim
            .into_bytes()
            .map_err(|e| EngineError::Tensor(format!("optimizer state: {e:?}")))?
            .to_vec();
        Ok(TwoTowerParts {
            cfg: self.cfg.clone(),
            user_ids: self.user_ids.ids().to_vec(),
            item_ids: self.item_ids.ids().to_vec(),
            category_ids: self.category_ids.ids().to_vec(),
            users: self.users.to_parts(),
            items: self.items.to_parts(),
            categories: self.categories.to_parts(),
            history: self.history.clone(),
            history_next: self.history_next.clone(),
            item_categories: self.item_categories.clone(),
            dense,
            optimizer,
            freq: self.freq.clone(),
            steps: self.steps,
            user_seen: self.user_seen.clone(),
            item_seen: self.item_seen.clone(),
        })
    }

    fn flat<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
        t.into_data()
            .try_into_vec::<f32>()
            .map_err(|e| EngineError::Tensor(format!("{e:?}")))
    }

    /// A model restored from saved state, training on `device` (autodiff).
    pub fn from_parts(p: TwoTowerParts, device: Device) -> Result<Self> {
        let bad = |what: String| EngineError::Config(format!("saved two-tower model: {what}"));
        let mut m = Self::new(p.cfg, device)?;
        let (d, h, n) = (m.cfg.dim, m.cfg.hidden, m.cfg.history_len);
        m.users = EmbeddingTable::from_parts(p.users).map_err(bad)?;
        m.items = EmbeddingTable::from_parts(p.items).map_err(bad)?;
        m.categories = EmbeddingTable::from_parts(p.categories).map_err(bad)?;
        m.user_ids = IdMap::from_ids(p.user_ids).map_err(bad)?;
        m.item_ids = IdMap::from_ids(p.item_ids).map_err(bad)?;
        m.category_ids = IdMap::from_ids(p.category_ids).map_err(bad)?;
        let (nu, ni) = (m.user_ids.len(), m.item_ids.len());
        if m.users.rows() != nu
            || m.items.rows() != ni
            || m.categories.rows() != m.category_ids.len()
            || [m.users.dim(), m.items.dim(), m.categories.dim()] != [d; 3]
            || p.history.len() != nu * n
            || p.history_next.len() != nu
            || p.item_categories.len() != ni * MAX_CATEGORIES
            || p.user_seen.len() != nu
            || p.item_seen.len() != ni
        {
            return Err(bad("tables, id maps and histories differ in size".into()));
        }
        let shapes = [(2 * d, h), (h, d), (2 * d, h), (h, d)];
        if p.dense.len() != 2 * shapes.len() {
            return Err(bad(format!("{} dense tensors, expected 8", p.dense.len())));
        }
        let dev = m.device.clone();
        let mut layers = Vec::with_capacity(4);
        for (k, &(din, dout)) in shapes.iter().enumerate() {
            let (w, b) = (&p.dense[2 * k], &p.dense[2 * k + 1]);
            if w.len() != din * dout || b.len() != dout {
                return Err(bad(format!("{} has the wrong size", DENSE_ORDER[2 * k])));
            }
            let id = 1 + 2 * k as u64;
            let w = Tensor::<2>::from_data(TensorData::new(w.clone(), [din, dout]), &dev);
            let b = Tensor::<1>::from_data(TensorData::new(b.clone(), [dout]), &dev);
            layers.push(Linear {
                weight: Param::initialized(ParamId::from(id), w.require_grad()),
                bias: Some(Param::initialized(ParamId::from(id + 1), b.require_grad())),
            });
        }
        let mut layers = layers.into_iter();
        let mut next = || layers.next().expect("four layers");
        m.towers = Towers {
            user_hidden: next(),
            user_out: next(),
            item_hidden: next(),
            item_out: next(),
        };
        m.optim = AdamConfig::new()
            .init()
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(p.optimizer))
            .map_err(|e| bad(format!("optimizer state: {e:?}")))?;
        m.history = p.history;
        m.history_next = p.history_next;
        m.item_categories = p.item_categories;
        m.freq = p.freq;
        m.steps = p.steps;
        m.user_seen = p.user_seen;
        m.item_seen = p.item_seen;
        Ok(m)
    }
}
