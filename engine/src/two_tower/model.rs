//! The two-tower model's state: id maps, id and category tables, user histories, item
//! categories, the MLPs and their optimizer; registering ids, expiry, serving vectors.

use burn::optim::{AdamConfig, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use recsys_index::ids::{self, Expired, IdMap, touch};
use recsys_schemas::Event;

use super::config::TwoTowerConfig;
use super::towers::Towers;
use crate::loss::ItemFrequency;
use crate::mf::StepStats;
use crate::table::EmbeddingTable;
use crate::{EngineError, Result};

/// Categories per item that feed the item tower; more are ignored.
pub const MAX_CATEGORIES: usize = 4;
/// An empty slot of a history or of an item's categories.
pub(super) const NONE: u32 = u32::MAX;

/// The two-tower model: id maps, id and category tables, user histories, the MLPs and
/// their optimizer.
pub struct TwoTowerModel {
    pub(super) cfg: TwoTowerConfig,
    pub(super) device: Device,
    pub(super) user_ids: IdMap,
    pub(super) item_ids: IdMap,
    pub(super) category_ids: IdMap,
    pub(super) users: EmbeddingTable,
    pub(super) items: EmbeddingTable,
    pub(super) categories: EmbeddingTable,
    /// `users × history_len` item rows, `NONE` where empty; a ring per user.
    pub(super) history: Vec<u32>,
    pub(super) history_next: Vec<u8>,
    /// `items × MAX_CATEGORIES` category rows, `NONE` where empty.
    pub(super) item_categories: Vec<u32>,
    pub(super) towers: Towers,
    pub(super) optim: ModuleOptimizer,
    pub(super) freq: ItemFrequency,
    pub(super) steps: u64,
    pub(super) user_seen: Vec<u32>,
    pub(super) item_seen: Vec<u32>,
    /// The softmax runs on the fused CPU path (see [`TwoTowerConfig::fused_cpu_step`]).
    pub(super) fused: bool,
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

    /// Changes the id and category tables' learning rate from the next step on.
    pub fn set_learning_rate(&mut self, lr: f32) {
        self.cfg.learning_rate = lr.max(0.0);
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

    pub(super) fn register_item(&mut self, id: &str) -> u32 {
        let row = self.item_ids.get_or_insert(id);
        self.items.ensure_rows(self.item_ids.len());
        self.item_seen.resize(self.item_ids.len(), 0);
        self.item_categories
            .resize(self.item_ids.len() * MAX_CATEGORIES, NONE);
        row
    }

    pub(super) fn register_user(&mut self, id: &str) -> u32 {
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

    pub(super) fn user_history(&self, user: u32) -> &[u32] {
        let n = self.cfg.history_len;
        &self.history[user as usize * n..(user as usize + 1) * n]
    }

    pub(super) fn push_history(&mut self, user: u32, item: u32) {
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

    pub(super) fn read(t: Tensor<2>) -> Result<Vec<f32>> {
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
