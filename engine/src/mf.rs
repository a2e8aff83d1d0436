//! Matrix factorisation trained online with in-batch sampled softmax.
//!
//! The id-embedding tables live outside the autodiff graph (see [`crate::table`]). One
//! step: collect the batch's unique users and items, gather their rows, score every batch
//! user against every unique batch item, get the rows' gradients (on the CPU from the
//! hand-written step in [`crate::fused`]; elsewhere from burn's `backward()` on two small
//! leaf tensors), apply row-wise Adagrad to exactly those rows. Nothing is O(catalog)
//! per step.

use burn::tensor::{Device, Int, Tensor, TensorData};
use recsys_schemas::Event;
use serde::{Deserialize, Serialize};

use recsys_index::ids::{self, Expired, IdMap, touch};

use crate::{
    EngineError, Result, fused,
    loss::{
        self, ItemFrequency, LossKind, Sampling, SharedSettings, Targets, leaf_grad,
        step_candidates, unique_rows,
    },
    table::{EmbeddingTable, TableParts},
};

mod als;
pub use als::{AlsConfig, Recipe, Sweep};

/// The complete state of an [`MfModel`], for checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct MfParts {
    pub cfg: MfConfig,
    /// Ids in row order.
    pub user_ids: Vec<String>,
    pub item_ids: Vec<String>,
    pub users: TableParts,
    pub items: TableParts,
    /// Streaming item-frequency estimate (logQ).
    pub item_counts: Vec<f64>,
    pub total_count: f64,
    /// Steps taken; seeds the step's negative sampling.
    pub steps: u64,
    /// Last time (seconds) each user and item row was seen, for expiry.
    pub user_seen: Vec<u32>,
    pub item_seen: Vec<u32>,
}

/// Hyper-parameters of the MF model. Defaults suit implicit feedback at d = 64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MfConfig {
    /// Embedding dimension.
    pub dim: usize,
    /// Adagrad learning rate.
    pub learning_rate: f32,
    /// New rows are drawn uniformly from ±`init_scale`.
    pub init_scale: f32,
    /// Softmax temperature: logits are dot products divided by it.
    pub temperature: f32,
    /// L2 penalty on the rows a step touches.
    pub l2: f32,
    /// Subtract log(item frequency) from in-batch logits (Yi et al., RecSys 2019), so
    /// popular items are not over-penalised as negatives.
    pub logq_correction: bool,
    /// `softmax` (in-batch sampled softmax) or `bpr`.
    pub loss: LossKind,
    /// On the default CPU device (burn-flex), softmax steps use the hand-derived
    /// gradient of [`crate::fused`]: the same loss and gradients as burn's autodiff
    /// (tested against it), several times faster. false: burn autodiff everywhere.
    pub fused_cpu_step: bool,
    /// Softmax only: uniformly sampled negatives added to each step's in-batch items.
    /// At least the catalog's size: every item is a candidate of every step (a full
    /// softmax, which needs no logQ correction).
    pub negatives: usize,
    pub seed: u64,
    /// How the batch recipe (`retrain`, `eval`, the base of `eval --stream`) fits the
    /// model: `als` sweeps or `epochs` of the step above.
    pub recipe: Recipe,
    /// The `als` recipe's settings.
    pub als: AlsConfig,
}

impl Default for MfConfig {
    fn default() -> Self {
        Self {
            dim: 64,
            learning_rate: 0.1,
            init_scale: 0.1,
            temperature: 1.0,
            l2: 1e-4,
            logq_correction: true,
            loss: LossKind::Softmax,
            fused_cpu_step: true,
            negatives: 2048,
            seed: 17,
            recipe: Recipe::default(),
            als: AlsConfig::default(),
        }
    }
}

impl MfConfig {
    /// Checks ranges; the error names the key.
    pub fn validate(&self) -> Result<()> {
        SharedSettings {
            section: "model.mf",
            dim: self.dim,
            learning_rate: self.learning_rate,
            init_scale: self.init_scale,
            temperature: self.temperature,
            l2: self.l2,
            negatives: self.negatives,
        }
        .validate()?;
        self.als.validate()
    }

    pub(crate) fn sampling(&self) -> Sampling {
        Sampling {
            kind: self.loss,
            negatives: self.negatives,
            logq_correction: self.logq_correction,
            temperature: self.temperature,
            seed: self.seed.wrapping_add(2),
        }
    }
}

/// What one training step did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepStats {
    pub events: usize,
    /// Mean weighted loss; NaN when the step was skipped.
    pub loss: f32,
    /// True when the loss was not finite and no parameter was changed.
    pub skipped: bool,
}

/// The MF model: id maps, embedding tables and the item-frequency estimate for logQ.
#[derive(Debug)]
pub struct MfModel {
    cfg: MfConfig,
    device: Device,
    user_ids: IdMap,
    item_ids: IdMap,
    users: EmbeddingTable,
    items: EmbeddingTable,
    freq: ItemFrequency,
    steps: u64,
    user_seen: Vec<u32>,
    item_seen: Vec<u32>,
    /// Softmax steps take the fused CPU path (see [`MfConfig::fused_cpu_step`]).
    fused: bool,
    /// `VᵀV` of the item table, kept up to date once a refit has asked for it.
    gram: Option<crate::refit::Gram>,
    /// See [`Self::set_nominal_batch`].
    nominal_batch: f32,
}

/// Whether a model with `fused_cpu_step` on `device` takes the fused CPU path.
pub(crate) fn fused_path(fused_cpu_step: bool, device: &Device) -> bool {
    fused_cpu_step && *device == crate::device::cpu_autodiff_device()
}

impl MfModel {
    /// A fresh model training on `device`, which must have autodiff enabled.
    pub fn new(cfg: MfConfig, device: Device) -> Result<Self> {
        cfg.validate()?;
        if !device.is_autodiff() {
            return Err(EngineError::Config(
                "model device must have autodiff enabled".into(),
            ));
        }
        Ok(Self {
            fused: fused_path(cfg.fused_cpu_step, &device),
            users: EmbeddingTable::new(cfg.dim, cfg.init_scale, cfg.seed),
            items: EmbeddingTable::new(cfg.dim, cfg.init_scale, cfg.seed.wrapping_add(1)),
            cfg,
            device,
            user_ids: IdMap::new(),
            item_ids: IdMap::new(),
            freq: ItemFrequency::default(),
            steps: 0,
            user_seen: Vec::new(),
            item_seen: Vec::new(),
            gram: None,
            nominal_batch: 0.0,
        })
    }

    pub fn config(&self) -> &MfConfig {
        &self.cfg
    }

    /// Changes the tables' learning rate from the next step on (0 freezes them).
    pub fn set_learning_rate(&mut self, lr: f32) {
        self.cfg.learning_rate = lr.max(0.0);
    }

    /// From the next step on, a step's gradient is its batch's summed loss over at least
    /// this much weight rather than its mean: the gradient of a batch of 3 events when
    /// `nominal` is 1024 is scaled by 3/1024. For a row whose Adagrad accumulator already
    /// holds history (a trained base) the step shrinks by about as much; a fresh row's
    /// first step is scale-free under Adagrad and stays full. (The online trainer's
    /// batches are as small as the stream is slow; 0, the default, is the plain mean.)
    pub fn set_nominal_batch(&mut self, nominal: f32) {
        self.nominal_batch = nominal.max(0.0);
    }

    /// The model's state, copied.
    pub fn to_parts(&self) -> MfParts {
        MfParts {
            cfg: self.cfg.clone(),
            user_ids: self.user_ids.ids().to_vec(),
            item_ids: self.item_ids.ids().to_vec(),
            users: self.users.to_parts(),
            items: self.items.to_parts(),
            item_counts: self.freq.counts.clone(),
            total_count: self.freq.total,
            steps: self.steps,
            user_seen: self.user_seen.clone(),
            item_seen: self.item_seen.clone(),
        }
    }

    /// A model restored from saved state, training on `device` (autodiff).
    pub fn from_parts(p: MfParts, device: Device) -> Result<Self> {
        p.cfg.validate()?;
        if !device.is_autodiff() {
            return Err(EngineError::Config(
                "model device must have autodiff enabled".into(),
            ));
        }
        let bad = |what: String| EngineError::Config(format!("saved model: {what}"));
        let users = EmbeddingTable::from_parts(p.users).map_err(bad)?;
        let items = EmbeddingTable::from_parts(p.items).map_err(bad)?;
        if users.dim() != p.cfg.dim || items.dim() != p.cfg.dim {
            return Err(bad(format!(
                "tables of dimension {}/{} for a model of dimension {}",
                users.dim(),
                items.dim(),
                p.cfg.dim
            )));
        }
        if users.rows() != p.user_ids.len()
            || items.rows() != p.item_ids.len()
            || p.user_seen.len() != p.user_ids.len()
            || p.item_seen.len() != p.item_ids.len()
        {
            return Err(bad("id maps and tables differ in length".into()));
        }
        Ok(Self {
            fused: fused_path(p.cfg.fused_cpu_step, &device),
            cfg: p.cfg,
            device,
            user_ids: IdMap::from_ids(p.user_ids).map_err(bad)?,
            item_ids: IdMap::from_ids(p.item_ids).map_err(bad)?,
            users,
            items,
            freq: ItemFrequency {
                counts: p.item_counts,
                total: p.total_count,
            },
            steps: p.steps,
            user_seen: p.user_seen,
            item_seen: p.item_seen,
            gram: None,
            nominal_batch: 0.0,
        })
    }

    /// The device the model trains on.
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

    pub fn user_vector(&self, user_id: &str) -> Option<&[f32]> {
        self.user_ids.get(user_id).map(|r| self.users.row(r))
    }

    pub fn user_vector_by_row(&self, row: u32) -> &[f32] {
        self.users.row(row)
    }

    pub fn item_vector_by_row(&self, row: u32) -> &[f32] {
        self.items.row(row)
    }

    /// Solves the given users' vectors against the current item vectors
    /// ([`crate::refit::refit_users`]): each `(user row, its item rows)`. Returns the rows
    /// rewritten.
    pub fn refit_users(&mut self, users: &[(u32, Vec<u32>)], alpha: f32, lambda: f32) -> Vec<u32> {
        if users.is_empty() {
            return Vec::new();
        }
        if self.gram.as_ref().is_none_or(crate::refit::Gram::stale) {
            // Every row, a freed one with its initial values too: the cache then
            // follows each row change without asking which rows hold an id.
            self.gram = Some(crate::refit::Gram::of(self.cfg.dim, self.items.values()));
        }
        let Some(gram) = self.gram.as_ref() else {
            return Vec::new();
        };
        let refits: Vec<crate::refit::Refit<'_>> = users
            .iter()
            .map(|(user, items)| crate::refit::Refit {
                start: self.users.row(*user),
                items: items.iter().map(|&r| self.items.row(r)).collect(),
                scale: &[],
                lambda,
            })
            .collect();
        let d = self.cfg.dim;
        let solved =
            crate::refit::refit_users(gram.matrix(), &refits, d, alpha, crate::refit::CG_STEPS);
        drop(refits);
        let mut done = Vec::with_capacity(users.len());
        for ((user, _), u) in users.iter().zip(solved.chunks(d)) {
            if u.iter().all(|x| x.is_finite()) {
                self.users.set_row(*user, u);
                done.push(*user);
            }
        }
        done
    }

    /// Bytes held by tables and optimizer state (id maps not included).
    pub fn table_bytes(&self) -> usize {
        self.users.memory_bytes()
            + self.items.memory_bytes()
            + (self.user_seen.capacity() + self.item_seen.capacity()) * 4
    }

    /// Registers the batch's ids and trains one step on it. Returns the stats and the rows
    /// it changed (users, items), which the caller publishes.
    pub fn train_events(&mut self, events: &[Event]) -> Result<(StepStats, Vec<u32>, Vec<u32>)> {
        let mut batch = Vec::with_capacity(events.len());
        for e in events {
            let (u, i) = self.register(e);
            batch.push((u, i, e.weight));
        }
        self.grow_tables();
        self.train_rows(&batch)
    }

    /// The event's user and item rows, their ids added if new and their last-seen times
    /// moved on. The tables grow to the id maps in [`Self::grow_tables`].
    fn register(&mut self, e: &Event) -> (u32, u32) {
        let u = self.user_ids.get_or_insert(&e.user_id);
        let i = self.item_ids.get_or_insert(&e.item_id);
        touch(&mut self.user_seen, u, e.ts);
        touch(&mut self.item_seen, i, e.ts);
        (u, i)
    }

    /// Gives every registered id its row (and the kept `VᵀV` the new item rows).
    fn grow_tables(&mut self) {
        self.users.ensure_rows(self.user_ids.len());
        let old_rows = self.items.rows();
        self.items.ensure_rows(self.item_ids.len());
        if let Some(gram) = self.gram.as_mut() {
            for r in old_rows as u32..self.items.rows() as u32 {
                gram.replace(None, Some(self.items.row(r)));
            }
        }
        self.user_seen.resize(self.user_ids.len(), 0);
        self.item_seen.resize(self.item_ids.len(), 0);
    }

    /// Expires users and items last seen before `cutoff_ms`: their ids are forgotten and
    /// their rows (initial values, no Adagrad state, no frequency) wait for new ids.
    pub fn expire(&mut self, cutoff_ms: i64) -> Expired {
        let users = ids::expire(&mut self.user_ids, &self.user_seen, cutoff_ms);
        let items = ids::expire(&mut self.item_ids, &self.item_seen, cutoff_ms);
        for &(r, _) in &users {
            self.users.reset_row(r);
        }
        for &(r, _) in &items {
            let old = self.gram.is_some().then(|| self.items.row(r).to_vec());
            self.items.reset_row(r);
            self.freq.reset(r);
            if let Some(gram) = self.gram.as_mut() {
                gram.replace(old.as_deref(), Some(self.items.row(r)));
            }
        }
        Expired { users, items }
    }

    /// One step on `(user row, item row, weight)` triples whose rows already exist.
    pub fn train_rows(
        &mut self,
        batch: &[(u32, u32, f32)],
    ) -> Result<(StepStats, Vec<u32>, Vec<u32>)> {
        if batch.is_empty() {
            return Ok((StepStats::default(), Vec::new(), Vec::new()));
        }
        let (u_rows, u_pos) = unique_rows(batch.iter().map(|b| b.0));
        let (i_rows, targets) = step_candidates(
            batch,
            &mut self.freq,
            &mut self.steps,
            self.items.rows(),
            &self.cfg.sampling(),
        );
        let step = if self.fused && targets.kind == LossKind::Softmax {
            let s = fused::softmax_step(
                &self.users.gather(&u_rows),
                &self.items.gather(&i_rows),
                &u_pos,
                self.cfg.dim,
                &targets,
            );
            MfStep {
                loss: s.loss,
                user_grads: s.user_grads,
                item_grads: s.item_grads,
            }
        } else {
            mf_step(
                &self.device,
                self.users.gather(&u_rows),
                self.items.gather(&i_rows),
                u_pos,
                self.cfg.dim,
                &targets,
            )?
        };
        let stats = StepStats {
            events: batch.len(),
            loss: step.loss,
            skipped: !step.loss.is_finite(),
        };
        if stats.skipped {
            return Ok((stats, Vec::new(), Vec::new()));
        }
        let lr = self.cfg.learning_rate;
        let l2 = self.cfg.l2;
        let mut gu = step.user_grads;
        add_l2(&mut gu, &self.users, &u_rows, l2);
        let mut gi = step.item_grads;
        add_l2(&mut gi, &self.items, &i_rows, l2);
        let weight: f32 = batch.iter().map(|b| b.2.max(0.0)).sum();
        if weight < self.nominal_batch {
            let share = weight / self.nominal_batch;
            gu.iter_mut().chain(gi.iter_mut()).for_each(|g| *g *= share);
        }
        let users = self.users.adagrad_update(&u_rows, &gu, lr);
        let before = self.gram.is_some().then(|| self.items.gather(&i_rows));
        let items = self.items.adagrad_update(&i_rows, &gi, lr);
        if let (Some(gram), Some(before)) = (self.gram.as_mut(), before) {
            gram.replace_rows(&before, &self.items.gather(&i_rows));
        }
        Ok((stats, users, items))
    }

    /// Exact top-`k` item rows for a query vector by brute force, skipping `exclude`.
    /// Used for evaluation and tests; serving uses the ANN index.
    pub fn exact_top_k(
        &self,
        query: &[f32],
        k: usize,
        exclude: &std::collections::HashSet<u32>,
    ) -> Vec<(u32, f32)> {
        let mut scored: Vec<(u32, f32)> = (0..self.item_ids.len() as u32)
            .filter(|r| !exclude.contains(r))
            .map(|r| (r, recsys_index::vector::dot(query, self.items.row(r))))
            .collect();
        let k = k.min(scored.len());
        if k == 0 {
            return Vec::new();
        }
        scored.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
        scored.truncate(k);
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored
    }
}

pub(crate) fn add_l2(grads: &mut [f32], table: &EmbeddingTable, rows: &[u32], l2: f32) {
    if l2 == 0.0 {
        return;
    }
    let d = table.dim();
    for (k, &r) in rows.iter().enumerate() {
        for (g, w) in grads[k * d..(k + 1) * d].iter_mut().zip(table.row(r)) {
            *g += l2 * w;
        }
    }
}

struct MfStep {
    loss: f32,
    user_grads: Vec<f32>,
    item_grads: Vec<f32>,
}

/// Gathers the batch's unique user and candidate item rows into leaves that require
/// grad, scores them with the shared loss and reads the leaves' gradients.
fn mf_step(
    device: &Device,
    users: Vec<f32>,
    items: Vec<f32>,
    user_pos: Vec<i64>,
    d: usize,
    targets: &Targets,
) -> Result<MfStep> {
    let nu = users.len() / d;
    let ni = items.len() / d;
    let b = user_pos.len();
    let users = Tensor::<2>::from_data(TensorData::new(users, [nu, d]), device).require_grad();
    let items = Tensor::<2>::from_data(TensorData::new(items, [ni, d]), device).require_grad();
    let user_pos = Tensor::<1, Int>::from_data(TensorData::new(user_pos, [b]), device);
    let batch_users = users.clone().select(0, user_pos);
    let loss = loss::loss(device, batch_users, items.clone(), targets);
    let loss_value: f32 = loss.clone().into_scalar();
    if !loss_value.is_finite() {
        return Ok(MfStep {
            loss: loss_value,
            user_grads: Vec::new(),
            item_grads: Vec::new(),
        });
    }
    let grads = loss.backward();
    Ok(MfStep {
        loss: loss_value,
        user_grads: leaf_grad(&users, &grads)?,
        item_grads: leaf_grad(&items, &grads)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::cpu_autodiff_device;

    #[test]
    fn fused_step_matches_burn_autodiff() {
        use rand::{RngExt, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(5);
        for (d, nu, b, n, logq, temperature) in [
            (8, 5, 12, 9, false, 1.0),
            (16, 40, 100, 70, true, 0.3),
            (64, 300, 1024, 1000, true, 0.7),
        ] {
            let users: Vec<f32> = (0..nu * d).map(|_| rng.random_range(-0.5..0.5)).collect();
            let items: Vec<f32> = (0..n * d).map(|_| rng.random_range(-0.5..0.5)).collect();
            let user_pos: Vec<i64> = (0..b).map(|_| rng.random_range(0..nu as i64)).collect();
            let targets = Targets {
                positive: (0..b).map(|_| rng.random_range(0..n as i64)).collect(),
                negative: Vec::new(),
                weights: (0..b).map(|_| rng.random_range(0.0..2.0)).collect(),
                log_q: (0..n)
                    .map(|_| {
                        if logq {
                            rng.random_range(-9.0..-1.0)
                        } else {
                            0.0
                        }
                    })
                    .collect(),
                temperature,
                kind: LossKind::Softmax,
            };
            let fused = fused::softmax_step(&users, &items, &user_pos, d, &targets);
            let burn = mf_step(
                &cpu_autodiff_device(),
                users.clone(),
                items.clone(),
                user_pos.clone(),
                d,
                &targets,
            )
            .unwrap();
            assert!(
                (fused.loss - burn.loss).abs() <= 1e-5 * burn.loss.abs().max(1.0),
                "d {d}: loss {} vs {}",
                fused.loss,
                burn.loss
            );
            for (name, got, want) in [
                ("users", &fused.user_grads, &burn.user_grads),
                ("items", &fused.item_grads, &burn.item_grads),
            ] {
                assert_eq!(got.len(), want.len());
                let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                for (k, (g, w)) in got.iter().zip(want.iter()).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-4 * scale,
                        "d {d}, {name}[{k}]: {g} vs {w} (scale {scale})"
                    );
                }
            }
        }
    }

    #[test]
    fn one_step_lowers_the_loss_of_its_batch_and_touches_only_its_rows() {
        // In-batch candidates only: sampled negatives (or a full softmax) touch others.
        let cfg = MfConfig {
            negatives: 0,
            ..MfConfig::default()
        };
        let mut m = MfModel::new(cfg, cpu_autodiff_device()).unwrap();
        let ev = |u: &str, i: &str| {
            Event::from_json(
                format!(r#"{{"user_id":"{u}","item_id":"{i}"}}"#).as_bytes(),
                0,
            )
            .unwrap()
        };
        // Register an extra item that is not in the training batch.
        m.train_events(&[ev("x", "untouched")]).unwrap();
        let before = m.item_vector_by_row(0).to_vec();
        let batch = vec![ev("a", "p"), ev("b", "q"), ev("c", "r"), ev("a", "q")];
        let (first, users, items) = m.train_events(&batch).unwrap();
        assert_eq!(users.len(), 3);
        assert_eq!(items.len(), 3, "p, q and r, each once");
        let mut last = first;
        for _ in 0..20 {
            last = m.train_events(&batch).unwrap().0;
        }
        assert!(last.loss < first.loss, "{} !< {}", last.loss, first.loss);
        assert_eq!(m.item_vector_by_row(0), before.as_slice());
    }

    /// Recall@10 of the learned model and of popularity on held-out future items.
    fn planted_recall(epochs: usize) -> (f64, f64) {
        use crate::metrics::{Mean, recall_at_k};
        use crate::popularity::Popularity;
        use crate::synth::SynthConfig;
        use std::collections::{HashMap, HashSet};

        let data = SynthConfig {
            users: 600,
            items: 400,
            events: 24_000,
            clusters: 12,
            seed: 5,
            ..SynthConfig::default()
        }
        .generate()
        .unwrap();
        let mut m = MfModel::new(MfConfig::default(), cpu_autodiff_device()).unwrap();
        for _ in 0..epochs {
            for chunk in data.train.chunks(256) {
                m.train_events(chunk).unwrap();
            }
        }
        let mut pop = Popularity::new(f64::INFINITY);
        let mut seen: HashMap<u32, HashSet<u32>> = HashMap::new();
        for e in &data.train {
            let (u, i) = (
                m.user_ids().get(&e.user_id).unwrap(),
                m.item_ids().get(&e.item_id).unwrap(),
            );
            pop.add(i, 1.0, e.ts);
            seen.entry(u).or_default().insert(i);
        }
        let (mut model_recall, mut pop_recall) = (Mean::default(), Mean::default());
        for (user, future) in &data.test {
            let u = m.user_ids().get(user).unwrap();
            let relevant: HashSet<u32> =
                future.iter().filter_map(|i| m.item_ids().get(i)).collect();
            let ranked: Vec<u32> = m
                .exact_top_k(m.user_vector_by_row(u), 10, &seen[&u])
                .iter()
                .map(|x| x.0)
                .collect();
            let popular: Vec<u32> = pop.top_k(10, &seen[&u]).iter().map(|x| x.0).collect();
            if let Some(r) = recall_at_k(&ranked, &relevant, 10) {
                model_recall.push(r);
                pop_recall.push(recall_at_k(&popular, &relevant, 10).unwrap());
            }
        }
        (model_recall.value(), pop_recall.value())
    }

    #[test]
    fn learns_the_planted_structure_well_above_popularity() {
        let (model, popularity) = planted_recall(3);
        assert!(
            model > 1.5 * popularity && model > popularity + 0.05,
            "MF recall@10 {model:.3} vs popularity {popularity:.3}"
        );
    }

    #[test]
    fn tables_grow_while_training_and_expired_rows_are_reset_and_reused() {
        let mut m = MfModel::new(MfConfig::default(), cpu_autodiff_device()).unwrap();
        let ev = |u: &str, i: &str, ts: i64| Event {
            user_id: u.into(),
            item_id: i.into(),
            kind: "click".into(),
            weight: 1.0,
            ts,
            event_id: None,
        };
        m.train_events(&[ev("old", "a", 1_000), ev("kept", "b", 50_000)])
            .unwrap();
        let fresh_row_0 = {
            let cfg = MfConfig::default();
            let mut t = EmbeddingTable::new(cfg.dim, cfg.init_scale, cfg.seed);
            t.ensure_rows(1);
            t.row(0).to_vec()
        };
        // Growth: a thousand new users in later batches, no stop.
        let batch: Vec<Event> = (0..1000)
            .map(|k| ev(&format!("n{k}"), "b", 60_000))
            .collect();
        m.train_events(&batch).unwrap();
        assert_eq!(m.user_ids().len(), 1002);
        let expired = m.expire(30_000);
        assert_eq!(expired.users, vec![(0, "old".to_owned())]);
        assert_eq!(expired.items, vec![(0, "a".to_owned())]);
        assert_eq!(m.user_ids().get("old"), None);
        // The row is back at its initial values (the seeded init of row 0) ...
        assert_eq!(m.user_vector_by_row(0), fresh_row_0.as_slice());
        // ... and the next new user gets it.
        m.train_events(&[ev("newcomer", "b", 70_000)]).unwrap();
        assert_eq!(m.user_ids().get("newcomer"), Some(0));
        assert_eq!(m.user_ids().len(), 1002);
    }

    #[test]
    fn rejects_bad_config_naming_the_key() {
        let cfg = MfConfig {
            learning_rate: -1.0,
            ..MfConfig::default()
        };
        let err = MfModel::new(cfg, cpu_autodiff_device()).unwrap_err();
        assert!(err.to_string().contains("model.mf.learning_rate"), "{err}");
    }
}
