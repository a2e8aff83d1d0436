//! The training losses both models share, written once on burn tensors.
//!
//! - **Sampled softmax** (default): each event's user is scored against every candidate
//!   item of the step (the batch's unique items, plus any uniformly sampled negatives);
//!   the event's own item is the positive. With logQ correction each candidate's logit is
//!   lowered by the log of its sampling probability (Yi et al., RecSys 2019): in-batch
//!   items by their streaming frequency, uniform negatives by `1 / catalog size`.
//! - **BPR** (Rendle et al., 2009): each event's positive against one uniformly sampled
//!   negative, `−log σ(s⁺ − s⁻)`.

use std::collections::HashMap;

use burn::tensor::{
    Device, Int, Tensor, TensorData,
    activation::{log_sigmoid, log_softmax},
};
use rand::{RngExt, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

/// Which loss a model trains with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    #[default]
    Softmax,
    Bpr,
}

/// The step's candidates and targets, positions into the candidate item rows.
pub(crate) struct Targets {
    /// For each event, its positive's position among the candidates.
    pub positive: Vec<i64>,
    /// BPR only: for each event, its negative's position among the candidates.
    pub negative: Vec<i64>,
    pub weights: Vec<f32>,
    /// Softmax only: log q per candidate (zeros when logQ is off).
    pub log_q: Vec<f32>,
    pub temperature: f32,
    pub kind: LossKind,
}

/// Mean weighted loss of `batch_users` (`b × d`, one row per event) against `items`
/// (`n × d`, the candidates).
pub(crate) fn loss(
    device: &Device,
    batch_users: Tensor<2>,
    items: Tensor<2>,
    t: &Targets,
) -> Tensor<1> {
    let b = t.positive.len();
    let n = items.dims()[0];
    let weights = Tensor::<2>::from_data(TensorData::new(t.weights.clone(), [b, 1]), device);
    let total_weight: f32 = t.weights.iter().sum::<f32>().max(f32::MIN_POSITIVE);
    let positive = Tensor::<2, Int>::from_data(TensorData::new(t.positive.clone(), [b, 1]), device);
    let scores = batch_users
        .matmul(items.transpose())
        .mul_scalar(1.0 / t.temperature);
    let per_event = match t.kind {
        LossKind::Softmax => {
            let log_q = Tensor::<2>::from_data(TensorData::new(t.log_q.clone(), [1, n]), device);
            log_softmax(scores - log_q, 1).gather(1, positive)
        }
        LossKind::Bpr => {
            let negative =
                Tensor::<2, Int>::from_data(TensorData::new(t.negative.clone(), [b, 1]), device);
            log_sigmoid(scores.clone().gather(1, positive) - scores.gather(1, negative))
        }
    };
    (per_event * weights).sum().neg().div_scalar(total_weight)
}

/// `count` item rows drawn uniformly from `0..catalog`, from a generator seeded by the
/// model's seed and step number, so a restored model draws the same negatives.
pub(crate) fn uniform_rows(seed: u64, step: u64, catalog: usize, count: usize) -> Vec<u32> {
    if catalog == 0 {
        return Vec::new();
    }
    let mut rng = StdRng::seed_from_u64(seed ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03));
    (0..count)
        .map(|_| rng.random_range(0..catalog as u32))
        .collect()
}

/// Streaming item-frequency estimate, the `q` of logQ correction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemFrequency {
    pub counts: Vec<f64>,
    pub total: f64,
}

impl ItemFrequency {
    pub fn observe(&mut self, row: u32, weight: f32) {
        let i = row as usize;
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0.0);
        }
        let w = f64::from(weight.max(0.0));
        self.counts[i] += w;
        self.total += w;
    }

    /// log of the item's share of the stream so far, smoothed so unseen items are finite.
    pub fn log_q(&self, row: u32) -> f32 {
        let c = self.counts.get(row as usize).copied().unwrap_or(0.0);
        ((c + 1.0) / (self.total + 1.0)).ln() as f32
    }

    /// Forgets a row (its id expired and the row will be reused).
    pub fn reset(&mut self, row: u32) {
        if let Some(c) = self.counts.get_mut(row as usize) {
            self.total = (self.total - *c).max(0.0);
            *c = 0.0;
        }
    }
}

/// The settings both models share, checked once; errors name `{section}.{key}`.
pub(crate) struct SharedSettings<'a> {
    pub section: &'a str,
    pub dim: usize,
    pub learning_rate: f32,
    pub init_scale: f32,
    pub temperature: f32,
    pub l2: f32,
    pub negatives: usize,
}

impl SharedSettings<'_> {
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |key: &str, why: &str| {
            Err(crate::EngineError::Config(format!(
                "{}.{key}: {why}",
                self.section
            )))
        };
        let positive = |x: f32| x > 0.0 && x.is_finite();
        if self.dim == 0 || self.dim > 4096 {
            return bad("dim", "must be in 1..=4096");
        }
        // 0 is allowed: the tables stay as they are (a frozen model that still counts).
        if !(self.learning_rate >= 0.0 && self.learning_rate.is_finite()) {
            return bad("learning_rate", "must be zero or a positive number");
        }
        if !positive(self.init_scale) {
            return bad("init_scale", "must be a positive number");
        }
        if !positive(self.temperature) {
            return bad("temperature", "must be a positive number");
        }
        if !(self.l2 >= 0.0 && self.l2.is_finite()) {
            return bad("l2", "must be zero or positive");
        }
        if self.negatives > 100_000 {
            return bad("negatives", "must be at most 100000");
        }
        Ok(())
    }
}

/// How a model picks its candidates and scores them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sampling {
    pub kind: LossKind,
    /// Softmax: uniformly sampled negatives per step, on top of the in-batch items.
    pub negatives: usize,
    pub logq_correction: bool,
    pub temperature: f32,
    pub seed: u64,
}

/// What every step does before scoring: count the batch's items in the streaming
/// frequency, take the next step number (it seeds the negatives) and pick the candidates
/// for `(user row, item row, weight)` triples; negative weights count as zero.
pub(crate) fn step_candidates(
    batch: &[(u32, u32, f32)],
    freq: &mut ItemFrequency,
    steps: &mut u64,
    catalog: usize,
    s: &Sampling,
) -> (Vec<u32>, Targets) {
    for &(_, i, w) in batch {
        freq.observe(i, w);
    }
    let step = *steps;
    *steps += 1;
    let items: Vec<u32> = batch.iter().map(|b| b.1).collect();
    let weights: Vec<f32> = batch.iter().map(|b| b.2.max(0.0)).collect();
    candidates(&items, weights, catalog, s, step, freq)
}

/// The candidate item rows of a step (the batch's unique items first, then sampled
/// negatives not already among them) and the targets into them.
pub(crate) fn candidates(
    items: &[u32],
    weights: Vec<f32>,
    catalog: usize,
    s: &Sampling,
    step: u64,
    freq: &ItemFrequency,
) -> (Vec<u32>, Targets) {
    let mut index: HashMap<u32, i64> = HashMap::with_capacity(items.len());
    let mut rows = Vec::with_capacity(items.len());
    let mut position = |r: u32, rows: &mut Vec<u32>| {
        *index.entry(r).or_insert_with(|| {
            rows.push(r);
            rows.len() as i64 - 1
        })
    };
    let positive: Vec<i64> = items.iter().map(|&r| position(r, &mut rows)).collect();
    let in_batch = rows.len();
    let extra = match s.kind {
        LossKind::Bpr => items.len(),
        LossKind::Softmax => s.negatives,
    };
    // As many negatives as the catalog holds: every item, a full softmax, whose
    // candidates are not a sample and need no correction.
    let full = s.kind == LossKind::Softmax && s.negatives >= catalog;
    let sampled: Vec<i64> = if full {
        (0..catalog as u32).for_each(|r| {
            position(r, &mut rows);
        });
        Vec::new()
    } else {
        uniform_rows(s.seed, step, catalog, extra)
            .into_iter()
            .map(|r| position(r, &mut rows))
            .collect()
    };
    let log_q = if s.logq_correction && s.kind == LossKind::Softmax && !full {
        let uniform = ((s.negatives as f64) / catalog.max(1) as f64).ln() as f32;
        rows.iter()
            .enumerate()
            .map(|(k, &r)| if k < in_batch { freq.log_q(r) } else { uniform })
            .collect()
    } else {
        vec![0.0; rows.len()]
    };
    let targets = Targets {
        positive,
        negative: if s.kind == LossKind::Bpr {
            sampled
        } else {
            Vec::new()
        },
        weights,
        log_q,
        temperature: s.temperature,
        kind: s.kind,
    };
    (rows, targets)
}

/// Unique rows in first-seen order, and each input's position among them.
pub(crate) fn unique_rows(rows: impl Iterator<Item = u32>) -> (Vec<u32>, Vec<i64>) {
    let mut index: HashMap<u32, i64> = HashMap::new();
    let mut unique = Vec::new();
    let pos = rows
        .map(|r| {
            *index.entry(r).or_insert_with(|| {
                unique.push(r);
                unique.len() as i64 - 1
            })
        })
        .collect();
    (unique, pos)
}

/// Reads a leaf's gradient as a flat vector.
pub(crate) fn leaf_grad(
    leaf: &Tensor<2>,
    grads: &burn::tensor::Gradients,
) -> crate::Result<Vec<f32>> {
    leaf.grad(grads)
        .ok_or_else(|| crate::EngineError::Tensor("leaf has no gradient".into()))?
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| crate::EngineError::Tensor(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_rows_keeps_first_seen_order() {
        let (u, p) = unique_rows([5u32, 3, 5, 9].into_iter());
        assert_eq!(u, vec![5, 3, 9]);
        assert_eq!(p, vec![0, 1, 0, 2]);
    }

    #[test]
    fn candidates_put_batch_items_first_and_correct_by_frequency() {
        let mut freq = ItemFrequency::default();
        for _ in 0..9 {
            freq.observe(0, 1.0);
        }
        freq.observe(1, 1.0);
        let s = Sampling {
            kind: LossKind::Softmax,
            negatives: 4,
            logq_correction: true,
            temperature: 1.0,
            seed: 3,
        };
        let (rows, t) = candidates(&[1, 0, 1], vec![1.0; 3], 50, &s, 0, &freq);
        assert_eq!(&rows[..2], &[1, 0]);
        assert_eq!(t.positive, vec![0, 1, 0]);
        assert!(rows.len() >= 2 && rows.len() <= 6, "{rows:?}");
        assert!(t.log_q[1] > t.log_q[0], "the popular item has the larger q");
        assert_eq!(t.log_q.len(), rows.len());
        // Same seed and step, same negatives: a restored model continues exactly.
        let (again, _) = candidates(&[1, 0, 1], vec![1.0; 3], 50, &s, 0, &freq);
        assert_eq!(rows, again);
        let bpr = Sampling {
            kind: LossKind::Bpr,
            ..s
        };
        let (rows, t) = candidates(&[1, 0, 1], vec![1.0; 3], 50, &bpr, 1, &freq);
        assert_eq!(t.negative.len(), 3);
        assert!(t.negative.iter().all(|&n| (n as usize) < rows.len()));
        assert!(t.log_q.iter().all(|&q| q == 0.0));
    }
}
