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

use std::collections::HashMap;

use burn::module::{Module, Param, ParamId};
use burn::nn::Linear;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData, activation::relu};
use rand::{RngExt, SeedableRng, rngs::StdRng};
use recsys_schemas::Event;
use serde::{Deserialize, Serialize};

use crate::{
    EngineError, Result, fused,
    ids::{self, Expired, IdMap, touch},
    loss::{
        self, ItemFrequency, LossKind, Sampling, SharedSettings, leaf_grad, step_candidates,
        unique_rows,
    },
    mf::{StepStats, add_l2},
    table::{EmbeddingTable, TableParts},
};

/// Categories per item that feed the item tower; more are ignored.
pub const MAX_CATEGORIES: usize = 4;
const NONE: u32 = u32::MAX;

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
            negatives: 0,
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

    fn sampling(&self) -> Sampling {
        Sampling {
            kind: self.loss,
            negatives: self.negatives,
            logq_correction: self.logq_correction,
            temperature: self.temperature,
            seed: self.seed.wrapping_add(2),
        }
    }
}

/// The two MLPs. Parameter ids are fixed (1..=8), so optimizer state saved with them
/// finds its parameters again after a restore.
#[derive(Module, Debug)]
pub struct Towers {
    user_hidden: Linear,
    user_out: Linear,
    item_hidden: Linear,
    item_out: Linear,
}

fn dense(
    d_in: usize,
    d_out: usize,
    id: u64,
    zero: bool,
    rng: &mut StdRng,
    device: &Device,
) -> Linear {
    // Kaiming-uniform bound for ReLU layers, as burn's default initializer.
    let bound = (1.0 / d_in as f32).sqrt();
    let mut draw = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                if zero {
                    0.0
                } else {
                    rng.random_range(-bound..bound)
                }
            })
            .collect()
    };
    let w = Tensor::<2>::from_data(TensorData::new(draw(d_in * d_out), [d_in, d_out]), device);
    let b = Tensor::<1>::from_data(TensorData::new(vec![0.0f32; d_out], [d_out]), device);
    Linear {
        weight: Param::initialized(ParamId::from(id), w.require_grad()),
        bias: Some(Param::initialized(ParamId::from(id + 1), b.require_grad())),
    }
}

impl Towers {
    fn new(cfg: &TwoTowerConfig, device: &Device) -> Self {
        let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_add(3));
        let (d, h) = (cfg.dim, cfg.hidden);
        Self {
            user_hidden: dense(2 * d, h, 1, false, &mut rng, device),
            user_out: dense(h, d, 3, true, &mut rng, device),
            item_hidden: dense(2 * d, h, 5, false, &mut rng, device),
            item_out: dense(h, d, 7, true, &mut rng, device),
        }
    }

    fn user(&self, id_emb: Tensor<2>, context: Tensor<2>) -> Tensor<2> {
        let x = Tensor::cat(vec![id_emb.clone(), context], 1);
        normalize(id_emb + self.user_out.forward(relu(self.user_hidden.forward(x))))
    }

    fn item(&self, id_emb: Tensor<2>, features: Tensor<2>) -> Tensor<2> {
        let x = Tensor::cat(vec![id_emb.clone(), features], 1);
        normalize(id_emb + self.item_out.forward(relu(self.item_hidden.forward(x))))
    }
}

fn normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).add_scalar(1e-12).sqrt();
    x / norm
}

/// The two-tower model: id maps, id and category tables, user histories, the MLPs and
/// their optimizer.
pub struct TwoTowerModel {
    cfg: TwoTowerConfig,
    device: Device,
    user_ids: IdMap,
    item_ids: IdMap,
    category_ids: IdMap,
    users: EmbeddingTable,
    items: EmbeddingTable,
    categories: EmbeddingTable,
    /// `users × history_len` item rows, `NONE` where empty; a ring per user.
    history: Vec<u32>,
    history_next: Vec<u8>,
    /// `items × MAX_CATEGORIES` category rows, `NONE` where empty.
    item_categories: Vec<u32>,
    towers: Towers,
    optim: ModuleOptimizer,
    freq: ItemFrequency,
    steps: u64,
    user_seen: Vec<u32>,
    item_seen: Vec<u32>,
    /// The softmax runs on the fused CPU path (see [`TwoTowerConfig::fused_cpu_step`]).
    fused: bool,
}

impl std::fmt::Debug for TwoTowerModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwoTowerModel")
            .field("cfg", &self.cfg)
            .field("users", &self.user_ids.len())
            .field("items", &self.item_ids.len())
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

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

/// Tensors of one forward pass over given users and items.
struct Forward {
    users: Tensor<2>,
    items: Tensor<2>,
    categories: Option<Tensor<2>>,
    /// `None` when there were no users (items) to compute.
    user_out: Option<Tensor<2>>,
    item_out: Option<Tensor<2>>,
}

impl TwoTowerModel {
    pub fn new(cfg: TwoTowerConfig, device: Device) -> Result<Self> {
        cfg.validate()?;
        if !device.is_autodiff() {
            return Err(EngineError::Config(
                "model device must have autodiff enabled".into(),
            ));
        }
        Ok(Self {
            fused: crate::mf::fused_path(cfg.fused_cpu_step, &device),
            users: EmbeddingTable::new(cfg.dim, cfg.init_scale, cfg.seed),
            items: EmbeddingTable::new(cfg.dim, cfg.init_scale, cfg.seed.wrapping_add(1)),
            categories: EmbeddingTable::new(cfg.dim, cfg.init_scale, cfg.seed.wrapping_add(4)),
            towers: Towers::new(&cfg, &device),
            optim: AdamConfig::new().init(),
            cfg,
            device,
            user_ids: IdMap::new(),
            item_ids: IdMap::new(),
            category_ids: IdMap::new(),
            history: Vec::new(),
            history_next: Vec::new(),
            item_categories: Vec::new(),
            freq: ItemFrequency::default(),
            steps: 0,
            user_seen: Vec::new(),
            item_seen: Vec::new(),
        })
    }

    pub fn config(&self) -> &TwoTowerConfig {
        &self.cfg
    }

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

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dim(&self) -> usize {
        self.cfg.dim
    }

    pub fn user_ids(&self) -> &IdMap {
        &self.user_ids
    }

    pub fn item_ids(&self) -> &IdMap {
        &self.item_ids
    }

    /// Bytes held by tables, optimizer state, histories and item features (id maps and
    /// the MLPs, whose size does not grow with users, not included).
    pub fn table_bytes(&self) -> usize {
        self.users.memory_bytes()
            + self.items.memory_bytes()
            + self.categories.memory_bytes()
            + self.history.capacity() * 4
            + self.history_next.capacity()
            + self.item_categories.capacity() * 4
            + (self.user_seen.capacity() + self.item_seen.capacity()) * 4
    }

    fn register_item(&mut self, id: &str) -> u32 {
        let row = self.item_ids.get_or_insert(id);
        self.items.ensure_rows(self.item_ids.len());
        self.item_seen.resize(self.item_ids.len(), 0);
        self.item_categories
            .resize(self.item_ids.len() * MAX_CATEGORIES, NONE);
        row
    }

    fn register_user(&mut self, id: &str) -> u32 {
        let row = self.user_ids.get_or_insert(id);
        self.users.ensure_rows(self.user_ids.len());
        self.user_seen.resize(self.user_ids.len(), 0);
        let n = self.user_ids.len();
        self.history.resize(n * self.cfg.history_len, NONE);
        self.history_next.resize(n, 0);
        row
    }

    /// Sets an item's categorical features (the first [`MAX_CATEGORIES`] are used).
    pub fn set_item_categories(&mut self, item_id: &str, categories: &[String]) {
        let row = self.register_item(item_id) as usize;
        let mut slots = [NONE; MAX_CATEGORIES];
        for (slot, c) in slots.iter_mut().zip(categories) {
            *slot = self.category_ids.get_or_insert(c);
        }
        self.categories.ensure_rows(self.category_ids.len());
        self.item_categories[row * MAX_CATEGORIES..(row + 1) * MAX_CATEGORIES]
            .copy_from_slice(&slots);
    }

    fn user_history(&self, user: u32) -> &[u32] {
        let n = self.cfg.history_len;
        &self.history[user as usize * n..(user as usize + 1) * n]
    }

    fn push_history(&mut self, user: u32, item: u32) {
        let n = self.cfg.history_len;
        if n == 0 {
            return;
        }
        let next = &mut self.history_next[user as usize];
        self.history[user as usize * n + *next as usize] = item;
        *next = ((*next as usize + 1) % n) as u8;
    }

    /// Expires users and items last seen before `cutoff_ms`. Their rows return to their
    /// initial values; an expired user's history is emptied, and an expired item leaves
    /// every history and loses its categories.
    pub fn expire(&mut self, cutoff_ms: i64) -> Expired {
        let users = ids::expire(&mut self.user_ids, &self.user_seen, cutoff_ms);
        let items = ids::expire(&mut self.item_ids, &self.item_seen, cutoff_ms);
        let n = self.cfg.history_len;
        for &(r, _) in &users {
            self.users.reset_row(r);
            let r = r as usize;
            self.history[r * n..(r + 1) * n].fill(NONE);
            self.history_next[r] = 0;
        }
        if !items.is_empty() {
            let gone: std::collections::HashSet<u32> = items.iter().map(|x| x.0).collect();
            for h in &mut self.history {
                if gone.contains(h) {
                    *h = NONE;
                }
            }
            for &r in &gone {
                self.items.reset_row(r);
                self.freq.reset(r);
                let r = r as usize;
                self.item_categories[r * MAX_CATEGORIES..(r + 1) * MAX_CATEGORIES].fill(NONE);
            }
        }
        Expired { users, items }
    }

    /// Replaces a user's history with the last `history_len` of `items` (oldest first),
    /// e.g. after offline training on shuffled data. Unknown items are skipped.
    pub fn set_history(&mut self, user_id: &str, items: &[String]) {
        let u = self.register_user(user_id);
        let n = self.cfg.history_len;
        let start = u as usize * n;
        self.history[start..start + n].fill(NONE);
        self.history_next[u as usize] = 0;
        let rows: Vec<u32> = items.iter().filter_map(|i| self.item_ids.get(i)).collect();
        for &r in rows.iter().skip(rows.len().saturating_sub(n)) {
            self.push_history(u, r);
        }
    }

    /// Registers the batch's ids and trains one step; the user histories then take the
    /// batch's items. Returns the stats and the touched rows (users, items).
    pub fn train_events(&mut self, events: &[Event]) -> Result<(StepStats, Vec<u32>, Vec<u32>)> {
        let mut batch = Vec::with_capacity(events.len());
        for e in events {
            let u = self.register_user(&e.user_id);
            let i = self.register_item(&e.item_id);
            touch(&mut self.user_seen, u, e.ts);
            touch(&mut self.item_seen, i, e.ts);
            batch.push((u, i, e.weight));
        }
        self.train_rows(&batch)
    }

    /// The forward pass of both towers. `queries` are `(user row, item to leave out of
    /// that user's history)` (`NONE` for none): one user-tower output per query, so a
    /// training event never sees its own item in its user's history. `item_rows` are the
    /// items to score; the users' history items are appended to the item leaf as needed.
    /// `require_grad` makes the gathered rows leaves of the autodiff graph.
    fn forward(
        &self,
        queries: &[(u32, u32)],
        item_rows: &[u32],
        require_grad: bool,
    ) -> (Forward, Vec<u32>, Vec<u32>, Vec<u32>) {
        let d = self.cfg.dim;
        let n = self.cfg.history_len;
        let dev = &self.device;
        let leaf = |data: Vec<f32>, rows: usize| {
            let t = Tensor::<2>::from_data(TensorData::new(data, [rows, d]), dev);
            if require_grad { t.require_grad() } else { t }
        };
        let (user_rows, user_pos) = unique_rows(queries.iter().map(|q| q.0));
        // The item leaf holds the scored items first, then history items not among them.
        let mut all_items = item_rows.to_vec();
        let mut position: HashMap<u32, i64> = item_rows
            .iter()
            .enumerate()
            .map(|(k, &r)| (r, k as i64))
            .collect();
        let nq = queries.len();
        let mut hist_idx = vec![0i64; nq * n];
        let mut hist_w = vec![0f32; nq * n];
        for (k, &(u, leave_out)) in queries.iter().enumerate() {
            let h: Vec<u32> = self
                .user_history(u)
                .iter()
                .copied()
                .filter(|&i| i != NONE && i != leave_out)
                .collect();
            for (j, &item) in h.iter().enumerate() {
                let p = *position.entry(item).or_insert_with(|| {
                    all_items.push(item);
                    all_items.len() as i64 - 1
                });
                hist_idx[k * n + j] = p;
                hist_w[k * n + j] = 1.0 / h.len() as f32;
            }
        }
        // Categories of the scored items.
        let ni = item_rows.len();
        let mut cat_rows: Vec<u32> = Vec::new();
        let mut cat_pos: HashMap<u32, i64> = HashMap::new();
        let mut cat_idx = vec![0i64; ni * MAX_CATEGORIES];
        let mut cat_w = vec![0f32; ni * MAX_CATEGORIES];
        for (k, &i) in item_rows.iter().enumerate() {
            let cats = &self.item_categories
                [i as usize * MAX_CATEGORIES..(i as usize + 1) * MAX_CATEGORIES];
            let count = cats.iter().filter(|&&c| c != NONE).count();
            for (j, &c) in cats.iter().filter(|&&c| c != NONE).enumerate() {
                cat_idx[k * MAX_CATEGORIES + j] = *cat_pos.entry(c).or_insert_with(|| {
                    cat_rows.push(c);
                    cat_rows.len() as i64 - 1
                });
                cat_w[k * MAX_CATEGORIES + j] = 1.0 / count as f32;
            }
        }
        let nu = user_rows.len();
        let users = leaf(self.users.gather(&user_rows), nu);
        let items = if all_items.is_empty() {
            // Inference for users without history: a zero row to select from.
            Tensor::<2>::zeros([1, d], dev)
        } else {
            leaf(self.items.gather(&all_items), all_items.len())
        };
        let context = if n == 0 {
            Tensor::<2>::zeros([nq, d], dev)
        } else {
            let idx = Tensor::<1, Int>::from_data(TensorData::new(hist_idx, [nq * n]), dev);
            let w = Tensor::<3>::from_data(TensorData::new(hist_w, [nq, n, 1]), dev);
            (items.clone().select(0, idx).reshape([nq, n, d]) * w)
                .sum_dim(1)
                .reshape([nq, d])
        };
        let (categories, features) = if cat_rows.is_empty() {
            (None, Tensor::<2>::zeros([ni.max(1), d], dev))
        } else {
            let cats = leaf(self.categories.gather(&cat_rows), cat_rows.len());
            let idx =
                Tensor::<1, Int>::from_data(TensorData::new(cat_idx, [ni * MAX_CATEGORIES]), dev);
            let w = Tensor::<3>::from_data(TensorData::new(cat_w, [ni, MAX_CATEGORIES, 1]), dev);
            let f = (cats.clone().select(0, idx).reshape([ni, MAX_CATEGORIES, d]) * w)
                .sum_dim(1)
                .reshape([ni, d]);
            (Some(cats), f)
        };
        let user_out = (nq > 0).then(|| {
            let pos = Tensor::<1, Int>::from_data(TensorData::new(user_pos, [nq]), dev);
            self.towers.user(users.clone().select(0, pos), context)
        });
        let item_out = (ni > 0).then(|| {
            let scored = items.clone().slice([0..ni, 0..d]);
            self.towers.item(scored, features)
        });
        (
            Forward {
                users,
                items,
                categories,
                user_out,
                item_out,
            },
            user_rows,
            all_items,
            cat_rows,
        )
    }

    /// One step on `(user row, item row, weight)` triples whose rows already exist.
    pub fn train_rows(
        &mut self,
        batch: &[(u32, u32, f32)],
    ) -> Result<(StepStats, Vec<u32>, Vec<u32>)> {
        if batch.is_empty() {
            return Ok((StepStats::default(), Vec::new(), Vec::new()));
        }
        let (cand_rows, targets) = step_candidates(
            batch,
            &mut self.freq,
            &mut self.steps,
            self.items.rows(),
            &self.cfg.sampling(),
        );
        let queries: Vec<(u32, u32)> = batch.iter().map(|b| (b.0, b.1)).collect();
        let (f, u_rows, all_items, cat_rows) = self.forward(&queries, &cand_rows, true);
        let (Some(user_out), Some(item_out)) = (f.user_out, f.item_out) else {
            return Err(EngineError::Tensor("a step without users or items".into()));
        };
        let (loss, loss_value) = if targets.kind == LossKind::Softmax && self.fused {
            // The softmax and its gradient by hand; burn backpropagates that gradient
            // through the towers via `Σ out ⊙ ∂L/∂out`, whose gradient it is.
            let d = self.cfg.dim;
            let u = Self::read(user_out.clone().detach())?;
            let it = Self::read(item_out.clone().detach())?;
            let b = u.len() / d;
            let per_event: Vec<i64> = (0..b as i64).collect();
            let s = fused::softmax_step(&u, &it, &per_event, d, &targets);
            if !s.loss.is_finite() {
                let stats = StepStats {
                    events: batch.len(),
                    loss: s.loss,
                    skipped: true,
                };
                return Ok((stats, Vec::new(), Vec::new()));
            }
            let n = it.len() / d;
            let du = Tensor::<2>::from_data(TensorData::new(s.user_grads, [b, d]), &self.device);
            let di = Tensor::<2>::from_data(TensorData::new(s.item_grads, [n, d]), &self.device);
            let surrogate = (user_out * du).sum() + (item_out * di).sum();
            (surrogate, s.loss)
        } else {
            let loss = loss::loss(&self.device, user_out, item_out, &targets);
            let value: f32 = loss.clone().into_scalar();
            (loss, value)
        };
        let stats = StepStats {
            events: batch.len(),
            loss: loss_value,
            skipped: !loss_value.is_finite(),
        };
        if stats.skipped {
            return Ok((stats, Vec::new(), Vec::new()));
        }
        let grads = loss.backward();
        let mut gu = leaf_grad(&f.users, &grads)?;
        let mut gi = leaf_grad(&f.items, &grads)?;
        let gc = match &f.categories {
            Some(c) => leaf_grad(c, &grads)?,
            None => Vec::new(),
        };
        let dense = GradientsParams::from_grads(grads, &self.towers);
        let (lr, l2) = (self.cfg.learning_rate, self.cfg.l2);
        add_l2(&mut gu, &self.users, &u_rows, l2);
        add_l2(&mut gi, &self.items, &all_items, l2);
        self.users.adagrad_update(&u_rows, &gu, lr);
        self.items.adagrad_update(&all_items, &gi, lr);
        if !cat_rows.is_empty() {
            self.categories.adagrad_update(&cat_rows, &gc, lr);
        }
        let towers = self.towers.clone();
        self.towers = self.optim.step(self.cfg.dense_learning_rate, towers, dense);
        for &(u, i, _) in batch {
            self.push_history(u, i);
        }
        Ok((stats, u_rows, all_items))
    }

    fn read(t: Tensor<2>) -> Result<Vec<f32>> {
        t.into_data()
            .try_into_vec::<f32>()
            .map_err(|e| EngineError::Tensor(format!("{e:?}")))
    }

    /// User-tower outputs of `rows`, `rows.len() × dim`, row-major.
    pub fn user_vectors(&self, rows: &[u32]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(rows.len() * self.cfg.dim);
        for chunk in rows.chunks(2048) {
            let queries: Vec<(u32, u32)> = chunk.iter().map(|&u| (u, NONE)).collect();
            let (f, ..) = self.forward(&queries, &[], false);
            if let Some(t) = f.user_out {
                out.extend(Self::read(t.detach())?);
            }
        }
        Ok(out)
    }

    /// Item-tower outputs of `rows`, `rows.len() × dim`, row-major.
    pub fn item_vectors(&self, rows: &[u32]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(rows.len() * self.cfg.dim);
        for chunk in rows.chunks(2048) {
            let (f, ..) = self.forward(&[], chunk, false);
            if let Some(t) = f.item_out {
                out.extend(Self::read(t.detach())?);
            }
        }
        Ok(out)
    }

    /// The user-tower output for a user id, if the user is known.
    pub fn user_vector(&self, user_id: &str) -> Option<Vec<f32>> {
        let row = self.user_ids.get(user_id)?;
        self.user_vectors(&[row]).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::cpu_autodiff_device;

    fn ev(u: &str, i: &str) -> Event {
        Event::from_json(
            format!(r#"{{"user_id":"{u}","item_id":"{i}"}}"#).as_bytes(),
            0,
        )
        .unwrap()
    }

    #[test]
    fn steps_lower_the_loss_and_outputs_are_unit_vectors() {
        let mut m = TwoTowerModel::new(TwoTowerConfig::default(), cpu_autodiff_device()).unwrap();
        m.set_item_categories("p", &["shoes".into()]);
        m.set_item_categories("q", &["shoes".into(), "red".into()]);
        let batch = vec![ev("a", "p"), ev("b", "q"), ev("c", "r"), ev("a", "q")];
        let first = m.train_events(&batch).unwrap().0;
        let mut last = first;
        for _ in 0..30 {
            last = m.train_events(&batch).unwrap().0;
        }
        assert!(last.loss < first.loss, "{} !< {}", last.loss, first.loss);
        let items = m.item_vectors(&[0, 1, 2]).unwrap();
        for v in items.chunks(64) {
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        }
        let u = m.user_vector("a").unwrap();
        assert_eq!(u.len(), 64);
        assert!(u.iter().all(|x| x.is_finite()));
        assert!(m.user_vector("nobody").is_none());
    }

    #[test]
    fn fused_step_trains_like_burn_autodiff() {
        let batch: Vec<Event> = (0..60)
            .map(|k| ev(&format!("u{}", k % 7), &format!("i{}", k % 11)))
            .collect();
        let run = |fused_cpu_step: bool| {
            let cfg = TwoTowerConfig {
                fused_cpu_step,
                dim: 16,
                hidden: 32,
                negatives: 5,
                logq_correction: true,
                ..TwoTowerConfig::default()
            };
            let mut m = TwoTowerModel::new(cfg, cpu_autodiff_device()).unwrap();
            m.set_item_categories("i1", &["c".into()]);
            let losses: Vec<f32> = (0..5)
                .map(|_| m.train_events(&batch).unwrap().0.loss)
                .collect();
            (
                losses,
                m.item_vectors(&[0, 1, 2]).unwrap(),
                m.user_vector("u3").unwrap(),
            )
        };
        let (fused, burn) = (run(true), run(false));
        for (a, b) in fused.0.iter().zip(&burn.0) {
            assert!((a - b).abs() < 1e-4, "losses {:?} vs {:?}", fused.0, burn.0);
        }
        for (a, b) in fused
            .1
            .iter()
            .chain(&fused.2)
            .zip(burn.1.iter().chain(&burn.2))
        {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
    }

    #[test]
    fn history_and_categories_change_the_towers() {
        let mut m = TwoTowerModel::new(TwoTowerConfig::default(), cpu_autodiff_device()).unwrap();
        let batch = vec![ev("a", "p"), ev("b", "q")];
        for _ in 0..5 {
            m.train_events(&batch).unwrap();
        }
        let before = m.user_vector("a").unwrap();
        m.train_events(&[ev("a", "z")]).unwrap();
        assert_ne!(m.user_vector("a").unwrap(), before);
        let item_before = m.item_vectors(&[0]).unwrap();
        m.set_item_categories("p", &["shoes".into()]);
        // A fresh category row is random, so the item's features (and output) move.
        assert_ne!(m.item_vectors(&[0]).unwrap(), item_before);
    }

    /// burn serialises Adam's state in map order, so equal states can differ in bytes.
    pub(crate) fn without_optimizer(mut p: TwoTowerParts) -> TwoTowerParts {
        p.optimizer.clear();
        p
    }

    #[test]
    fn restored_model_continues_bit_exactly() {
        let cfg = TwoTowerConfig {
            dim: 8,
            hidden: 16,
            history_len: 3,
            negatives: 4,
            ..TwoTowerConfig::default()
        };
        let mut a = TwoTowerModel::new(cfg, cpu_autodiff_device()).unwrap();
        a.set_item_categories("p", &["x".into()]);
        let b1 = vec![ev("a", "p"), ev("b", "q"), ev("a", "r")];
        let b2 = vec![ev("b", "p"), ev("c", "q"), ev("a", "s")];
        for _ in 0..3 {
            a.train_events(&b1).unwrap();
        }
        let parts = a.to_parts().unwrap();
        let mut b = TwoTowerModel::from_parts(parts.clone(), cpu_autodiff_device()).unwrap();
        assert_eq!(
            without_optimizer(b.to_parts().unwrap()),
            without_optimizer(parts)
        );
        for _ in 0..3 {
            let sa = a.train_events(&b2).unwrap().0;
            let sb = b.train_events(&b2).unwrap().0;
            assert_eq!(sa.loss.to_bits(), sb.loss.to_bits());
        }
        // Adam's moments came back exactly, or the weights would now differ.
        assert_eq!(
            without_optimizer(a.to_parts().unwrap()),
            without_optimizer(b.to_parts().unwrap())
        );
    }

    #[test]
    fn rejects_bad_config_naming_the_key() {
        let cfg = TwoTowerConfig {
            hidden: 0,
            ..TwoTowerConfig::default()
        };
        let err = TwoTowerModel::new(cfg, cpu_autodiff_device()).unwrap_err();
        assert!(err.to_string().contains("model.two_tower.hidden"), "{err}");
    }
}
