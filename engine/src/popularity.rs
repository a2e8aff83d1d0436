//! Time-decayed item popularity: the fallback ranking for users without a vector and the
//! baseline every model is compared with.
//!
//! An event at time `t` adds `w · 2^((t − t₀)/half_life)`, which equals adding `w` and
//! halving every count each half-life, without touching every item on every event. The
//! reference `t₀` moves forward (rescaling all counts) before the factor can overflow.

use std::collections::HashSet;

#[derive(Debug, Clone)]
pub struct Popularity {
    scores: Vec<f64>,
    half_life_ms: f64,
    t0: Option<i64>,
}

impl Popularity {
    /// `half_life_ms = f64::INFINITY` gives plain counts.
    pub fn new(half_life_ms: f64) -> Self {
        assert!(half_life_ms > 0.0, "half-life must be positive");
        Self {
            scores: Vec::new(),
            half_life_ms,
            t0: None,
        }
    }

    pub fn add(&mut self, item_row: u32, weight: f32, ts: i64) {
        let row = item_row as usize;
        if row >= self.scores.len() {
            self.scores.resize(row + 1, 0.0);
        }
        let t0 = *self.t0.get_or_insert(ts);
        let mut exponent = (ts - t0) as f64 / self.half_life_ms;
        if exponent > 500.0 {
            // Move the reference to `ts`: every stored score shrinks by 2^-exponent.
            let shrink = (-exponent).exp2();
            self.scores.iter_mut().for_each(|s| *s *= shrink);
            self.t0 = Some(ts);
            exponent = 0.0;
        }
        self.scores[row] += f64::from(weight.max(0.0)) * exponent.exp2();
    }

    /// The `k` highest-scoring item rows not in `exclude`, best first, with their scores
    /// relative to the best item.
    pub fn top_k(&self, k: usize, exclude: &HashSet<u32>) -> Vec<(u32, f32)> {
        let mut ranked: Vec<(u32, f64)> = self
            .scores
            .iter()
            .enumerate()
            .filter(|(r, s)| **s > 0.0 && !exclude.contains(&(*r as u32)))
            .map(|(r, s)| (r as u32, *s))
            .collect();
        let k = k.min(ranked.len());
        if k == 0 {
            return Vec::new();
        }
        ranked.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(k);
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let best = ranked[0].1;
        ranked
            .into_iter()
            .map(|(r, s)| (r, (s / best) as f32))
            .collect()
    }

    /// The same scores under other rows (another model's id map): `to(row)` is the
    /// item's new row, `None` drops it.
    pub fn remap(&self, to: impl Fn(u32) -> Option<u32>) -> Self {
        let mut out = Self {
            scores: Vec::new(),
            half_life_ms: self.half_life_ms,
            t0: self.t0,
        };
        for (row, &s) in self.scores.iter().enumerate() {
            if s > 0.0
                && let Some(new) = to(row as u32)
            {
                let new = new as usize;
                if new >= out.scores.len() {
                    out.scores.resize(new + 1, 0.0);
                }
                out.scores[new] += s;
            }
        }
        out
    }

    /// The current score of a row, relative to the reference time (0 for an unseen row):
    /// only comparisons between rows mean anything.
    pub fn score(&self, item_row: u32) -> f64 {
        self.scores.get(item_row as usize).copied().unwrap_or(0.0)
    }

    /// Forgets an item (its id expired and the row may be reused).
    pub fn reset(&mut self, item_row: u32) {
        if let Some(s) = self.scores.get_mut(item_row as usize) {
            *s = 0.0;
        }
    }

    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_by_count_and_excludes() {
        let mut p = Popularity::new(f64::INFINITY);
        for (item, n) in [(0u32, 1), (1, 5), (2, 3)] {
            for _ in 0..n {
                p.add(item, 1.0, 0);
            }
        }
        let top: Vec<u32> = p.top_k(2, &HashSet::new()).iter().map(|x| x.0).collect();
        assert_eq!(top, vec![1, 2]);
        let top: Vec<u32> = p
            .top_k(5, &HashSet::from([1]))
            .iter()
            .map(|x| x.0)
            .collect();
        assert_eq!(top, vec![2, 0]);
    }

    #[test]
    fn decay_prefers_recent_and_survives_long_spans() {
        let hour = 3_600_000;
        let mut p = Popularity::new(hour as f64);
        for _ in 0..3 {
            p.add(0, 1.0, 0);
        }
        p.add(1, 1.0, 4 * hour); // 3 events four half-lives ago weigh 3/16 < 1
        assert_eq!(p.top_k(1, &HashSet::new())[0].0, 1);
        // A year of half-lives forces the rescaling path; scores stay finite and ordered.
        p.add(2, 1.0, 1000 * hour);
        p.add(2, 1.0, 1000 * hour);
        p.add(1, 1.0, 1000 * hour);
        let top = p.top_k(3, &HashSet::new());
        assert_eq!(top[0].0, 2);
        assert!(top.iter().all(|(_, s)| s.is_finite()));
    }

    #[test]
    fn remap_moves_scores_to_new_rows_and_drops_unmapped() {
        let mut p = Popularity::new(f64::INFINITY);
        for (item, n) in [(0u32, 1), (1, 5), (2, 3)] {
            for _ in 0..n {
                p.add(item, 1.0, 0);
            }
        }
        // Row 0 → 7, row 1 → 3, row 2 is unknown to the other model.
        let q = p.remap(|r| [Some(7), Some(3), None][r as usize]);
        let top: Vec<(u32, f32)> = q.top_k(5, &HashSet::new());
        assert_eq!(top, vec![(3, 1.0), (7, 0.2)]);
    }
}
