//! The batch recipe of alternating least squares (Hu, Koren and Volinsky 2008; the
//! conjugate-gradient solve of Takács et al. 2011, as `implicit` fits it): every
//! user-item pair seen is a one with confidence `1 + alpha` (`1 + alpha (1 + ln n)` when
//! seen `n` times), every other pair a zero with confidence 1, and each sweep solves all
//! user rows against the fixed item rows, then all item rows against the fixed user rows. A sweep costs O(pairs · dim · steps +
//! rows · dim²), against a softmax epoch's O(events · candidates · dim): on the data we
//! have it fits in a few per cent of the time and ranks as well (docs/BENCHMARKS.md).
//!
//! It writes the same tables the online step then moves: the base of the online trainer
//! is an ALS fit, and the online refit of a batch's users solves the same loss.

use rayon::prelude::*;
use recsys_schemas::Event;
use serde::{Deserialize, Serialize};

use super::MfModel;
use crate::refit::{Refit, gram_of, refit_users};
use crate::table::EmbeddingTable;
use crate::{EngineError, Result};

/// How the batch recipe fits an MF model: `retrain`, `eval` and the base of
/// `eval --stream`. The online trainer always takes gradient steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recipe {
    /// Alternating least squares sweeps ([`AlsConfig`]).
    #[default]
    Als,
    /// Shuffled epochs of the online step (`loss`, `negatives`, `learning_rate`).
    Epochs,
}

/// Settings of the ALS recipe.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlsConfig {
    /// Extra confidence of an observed pair (its weight is `1 + alpha`).
    pub alpha: f32,
    /// L2 penalty of a row, times `(its pairs × alpha + the other side's rows)^
    /// lambda_exponent`: the row's total confidence (Rendle et al. 2022, "Revisiting
    /// the performance of iALS"). 0 keeps one penalty for every row.
    pub lambda: f32,
    pub lambda_exponent: f32,
    /// Conjugate-gradient steps per row and sweep, warm-started from the row's values.
    pub cg_steps: usize,
}

impl Default for AlsConfig {
    fn default() -> Self {
        Self {
            alpha: 4.0,
            lambda: 30.0,
            lambda_exponent: 0.0,
            cg_steps: 3,
        }
    }
}

impl AlsConfig {
    /// Checks ranges; the error names the key.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |key: &str, why: &str| Err(EngineError::Config(format!("model.mf.als.{key} {why}")));
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return bad("alpha", "must be finite and at least 0");
        }
        if !(self.lambda.is_finite() && self.lambda > 0.0) {
            return bad("lambda", "must be finite and positive");
        }
        if !(self.lambda_exponent.is_finite() && (0.0..=2.0).contains(&self.lambda_exponent)) {
            return bad("lambda_exponent", "must be between 0 and 2");
        }
        if !(1..=64).contains(&self.cg_steps) {
            return bad("cg_steps", "must be between 1 and 64");
        }
        Ok(())
    }

    /// The L2 penalty of a row with `pairs` pairs against `others` rows.
    fn penalty(&self, pairs: usize, others: usize) -> f32 {
        if self.lambda_exponent == 0.0 {
            return self.lambda;
        }
        let weight = pairs as f64 * f64::from(self.alpha) + others as f64;
        (f64::from(self.lambda) * weight.powf(f64::from(self.lambda_exponent))) as f32
    }
}

/// One sweep of [`MfModel::fit_als`].
#[derive(Debug, Clone, Copy)]
pub struct Sweep {
    /// 1-based.
    pub iteration: usize,
    /// The weighted square loss per observed pair after the sweep, penalty included.
    pub loss: f64,
}

/// The Adagrad accumulator a solved row starts its online life with: about what 20
/// softmax epochs leave on MovieLens-100K (1e-4). On the streaming protocol there, the
/// online arm scores NDCG@10 0.0921 / 0.0913 / 0.0911 with 1e-4 / 1e-3 / 1e-2 and 0.0674
/// with 0 (below the frozen base's 0.0683): a fresh accumulator makes the first step on
/// a tiny batch as large as on a full one.
const SETTLED_ACCUMULATOR: f32 = 1e-3;

/// Rows solved in one call of [`refit_users`] at most: bounds the solver's buffers
/// (`4 × rows × dim` floats).
const CHUNK: usize = 4096;

/// Each row's distinct partner rows (compressed sparse rows), with the confidence scale
/// of each pair.
struct Partners {
    start: Vec<usize>,
    rows: Vec<u32>,
    scale: Vec<f32>,
}

impl Partners {
    /// From `(row, partner, scale)` triples without repeated pairs.
    fn of(pairs: &[(u32, u32, f32)], flip: bool, n: usize) -> Self {
        let ends = |&(u, i, s): &(u32, u32, f32)| if flip { (i, u, s) } else { (u, i, s) };
        let mut counts = vec![0usize; n + 1];
        for (r, _, _) in pairs.iter().map(ends) {
            counts[r as usize + 1] += 1;
        }
        for k in 1..=n {
            counts[k] += counts[k - 1];
        }
        let mut fill = counts.clone();
        let mut rows = vec![0u32; counts[n]];
        let mut scale = vec![0f32; counts[n]];
        for (r, p, c) in pairs.iter().map(ends) {
            rows[fill[r as usize]] = p;
            scale[fill[r as usize]] = c;
            fill[r as usize] += 1;
        }
        Self {
            start: counts,
            rows,
            scale,
        }
    }

    fn of_row(&self, r: usize) -> &[u32] {
        &self.rows[self.start[r]..self.start[r + 1]]
    }

    fn scales_of_row(&self, r: usize) -> &[f32] {
        &self.scale[self.start[r]..self.start[r + 1]]
    }
}

/// Distinct pairs with the confidence scale of their repeats: `1 + ln(count)`, so a pair
/// seen once has confidence `1 + alpha` and repeats add to it slowly (Hu, Koren and
/// Volinsky's logarithmic confidence).
fn distinct(mut pairs: Vec<(u32, u32)>) -> Vec<(u32, u32, f32)> {
    pairs.sort_unstable();
    let mut out: Vec<(u32, u32, f32)> = Vec::with_capacity(pairs.len());
    let mut run = 0u32;
    for (k, &(u, i)) in pairs.iter().enumerate() {
        run += 1;
        if pairs.get(k + 1) != Some(&(u, i)) {
            out.push((u, i, 1.0 + (run as f32).ln()));
            run = 0;
        }
    }
    out
}

/// Solves every row of `solved` that has partners against the fixed `fixed` table, whose
/// Gram matrix is `g`.
fn sweep(
    solved: &mut EmbeddingTable,
    fixed: &EmbeddingTable,
    g: &[f64],
    partners: &Partners,
    cfg: &AlsConfig,
) {
    let d = fixed.dim();
    let live: Vec<u32> = (0..solved.rows() as u32)
        .filter(|&r| !partners.of_row(r as usize).is_empty())
        .collect();
    let solved_ref = &*solved;
    // Four chunks a thread, so that uneven rows even out.
    let chunk = live
        .len()
        .div_ceil(4 * rayon::current_num_threads())
        .clamp(64, CHUNK);
    let out: Vec<Vec<f32>> = live
        .par_chunks(chunk)
        .map(|rows| {
            let refits: Vec<Refit<'_>> = rows
                .iter()
                .map(|&r| {
                    let mine = partners.of_row(r as usize);
                    Refit {
                        start: solved_ref.row(r),
                        items: mine.iter().map(|&p| fixed.row(p)).collect(),
                        scale: partners.scales_of_row(r as usize),
                        lambda: cfg.penalty(mine.len(), fixed.rows()),
                    }
                })
                .collect();
            refit_users(g, &refits, d, cfg.alpha, cfg.cg_steps)
        })
        .collect();
    for (rows, values) in live.chunks(chunk).zip(out) {
        for (&r, v) in rows.iter().zip(values.chunks(d)) {
            if v.iter().all(|x| x.is_finite()) {
                solved.set_row(r, v);
            }
        }
    }
}

/// The weighted square loss per observed pair: `Σ_all s² + Σ_seen ((1 + α)(1 − s)² − s²)
/// + Σ λ_row ‖row‖²`, the first term as `trace(UᵀU · VᵀV)` from the tables' Gram matrices
/// `gu` and `gv`.
fn loss(
    (users, gu): (&EmbeddingTable, &[f64]),
    (items, gv): (&EmbeddingTable, &[f64]),
    by_user: &Partners,
    by_item: &Partners,
    cfg: &AlsConfig,
) -> f64 {
    let mut total: f64 = gu.iter().zip(gv).map(|(a, b)| a * b).sum();
    for u in 0..users.rows() {
        let uv = users.row(u as u32);
        for (&i, &scale) in by_user.of_row(u).iter().zip(by_user.scales_of_row(u)) {
            let c = 1.0 + f64::from(cfg.alpha * scale);
            let s = f64::from(recsys_index::vector::dot(uv, items.row(i)));
            total += c * (1.0 - s) * (1.0 - s) - s * s;
        }
    }
    for (table, partners, others) in [
        (users, by_user, items.rows()),
        (items, by_item, users.rows()),
    ] {
        for r in 0..table.rows() {
            let v = table.row(r as u32);
            let lambda = cfg.penalty(partners.of_row(r).len(), others);
            total += f64::from(lambda) * f64::from(recsys_index::vector::dot(v, v));
        }
    }
    total / by_user.rows.len().max(1) as f64
}

impl MfModel {
    /// Forgets the item-frequency estimate (before a solve over a whole history).
    pub fn forget_frequencies(&mut self) {
        self.freq = crate::loss::ItemFrequency::default();
    }

    /// Registers the events' ids and counts them as a step would, and returns their
    /// `(user row, item row)` pairs for [`Self::fit_als`].
    pub fn register_pairs(&mut self, events: &[Event]) -> Vec<(u32, u32)> {
        let pairs = events
            .iter()
            .map(|e| {
                let (u, i) = self.register(e);
                self.freq.observe(i, e.weight);
                (u, i)
            })
            .collect();
        self.grow_tables();
        pairs
    }

    /// `iterations` ALS sweeps ([`Recipe::Als`]) over the pairs [`Self::register_pairs`]
    /// returned, a pair seen `n` times at confidence `1 + alpha (1 + ln n)`; `on_sweep` is
    /// told after each sweep. Rows of ids the pairs do not hold are left as they are.
    pub fn fit_als(
        &mut self,
        pairs: Vec<(u32, u32)>,
        iterations: usize,
        on_sweep: &mut dyn FnMut(Sweep),
    ) -> Result<()> {
        let cfg = self.cfg.als;
        cfg.validate()?;
        let pairs = distinct(pairs);
        let by_user = Partners::of(&pairs, false, self.users.rows());
        let by_item = Partners::of(&pairs, true, self.items.rows());
        drop(pairs);
        let d = self.cfg.dim;
        let mut gv = gram_of(d, self.items.values());
        for iteration in 1..=iterations {
            sweep(&mut self.users, &self.items, &gv, &by_user, &cfg);
            let gu = gram_of(d, self.users.values());
            sweep(&mut self.items, &self.users, &gu, &by_item, &cfg);
            gv = gram_of(d, self.items.values());
            on_sweep(Sweep {
                iteration,
                loss: loss(
                    (&self.users, &gu),
                    (&self.items, &gv),
                    &by_user,
                    &by_item,
                    &cfg,
                ),
            });
        }
        // Every item row may have moved: a kept VᵀV is rebuilt on the next refit.
        self.gram = None;
        // Solved rows go on learning online as rows that have converged, not as fresh
        // ones (whose first Adagrad step is full-size whatever the gradient).
        for (table, partners) in [(&mut self.users, &by_user), (&mut self.items, &by_item)] {
            for r in 0..table.rows() {
                if !partners.of_row(r).is_empty() {
                    table.settle_row(r as u32, SETTLED_ACCUMULATOR);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::cpu_autodiff_device;
    use crate::mf::MfConfig;

    /// Two groups of users, each with its own group of items.
    fn blocks() -> Vec<Event> {
        let mut out = Vec::new();
        for u in 0..40 {
            let group = u % 2;
            for k in 0..6 {
                let item = group * 10 + (u * 3 + k) % 10;
                out.push(Event {
                    user_id: format!("u{u}"),
                    item_id: format!("i{item}"),
                    kind: "click".into(),
                    weight: 1.0,
                    ts: (u * 6 + k) as i64,
                    event_id: None,
                });
            }
        }
        out
    }

    #[test]
    fn sweeps_lower_the_loss_and_rank_the_users_own_group_first() {
        let events = blocks();
        let cfg = MfConfig {
            dim: 8,
            ..MfConfig::default()
        };
        let mut m = MfModel::new(cfg, cpu_autodiff_device()).unwrap();
        let mut losses = Vec::new();
        let pairs = m.register_pairs(&events);
        m.fit_als(pairs, 8, &mut |s| losses.push(s.loss)).unwrap();
        assert_eq!(losses.len(), 8);
        assert!(losses[7] < losses[0], "{losses:?}");
        assert!(losses.iter().all(|l| l.is_finite()));
        for u in 0..40 {
            let group = u % 2;
            let top = m.exact_top_k(
                m.user_vector(&format!("u{u}")).unwrap(),
                10,
                &Default::default(),
            );
            let own = top
                .iter()
                .filter(|(r, _)| {
                    let id = &m.item_ids().ids()[*r as usize];
                    let n: usize = id[1..].parse().unwrap();
                    n / 10 == group
                })
                .count();
            assert!(
                own >= 9,
                "user {u}: {own} of its group's items in the top 10"
            );
        }
    }

    #[test]
    fn a_bad_setting_is_named() {
        let mut cfg = MfConfig::default();
        cfg.als.lambda = 0.0;
        let err = MfModel::new(cfg, cpu_autodiff_device()).unwrap_err();
        assert!(err.to_string().contains("model.mf.als.lambda"), "{err}");
    }
}
