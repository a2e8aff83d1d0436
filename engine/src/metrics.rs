//! Ranking metrics over full rankings (no sampled negatives, see docs/DESIGN.md §5).

use std::collections::HashSet;
use std::hash::Hash;

/// Recall@k of one ranked list: hits in the first `k` over `min(k, |relevant|)`, so a
/// perfect list scores 1 even when a user has more relevant items than `k`.
/// `None` when there is nothing relevant.
pub fn recall_at_k<T: Eq + Hash>(ranked: &[T], relevant: &HashSet<T>, k: usize) -> Option<f64> {
    if relevant.is_empty() || k == 0 {
        return None;
    }
    let hits = ranked
        .iter()
        .take(k)
        .filter(|x| relevant.contains(x))
        .count();
    Some(hits as f64 / k.min(relevant.len()) as f64)
}

/// Running mean of per-user metric values.
#[derive(Debug, Default, Clone, Copy)]
pub struct Mean {
    sum: f64,
    n: usize,
}

impl Mean {
    pub fn push(&mut self, x: f64) {
        self.sum += x;
        self.n += 1;
    }

    pub fn count(&self) -> usize {
        self.n
    }

    pub fn value(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum / self.n as f64
        }
    }
}

/// Prequential (test-then-train) HitRate@k and NDCG@k over a sliding window of the last
/// `window` scored events (docs/DESIGN.md §5, streaming).
#[derive(Debug, Clone)]
pub struct Prequential {
    k: usize,
    window: usize,
    recent: std::collections::VecDeque<(f64, f64)>,
    sum_hr: f64,
    sum_ndcg: f64,
    scored: u64,
}

impl Prequential {
    pub fn new(k: usize, window: usize) -> Self {
        Self {
            k,
            window: window.max(1),
            recent: std::collections::VecDeque::with_capacity(window.max(1)),
            sum_hr: 0.0,
            sum_ndcg: 0.0,
            scored: 0,
        }
    }

    /// Adds one scored event: the 0-based rank of its item (half-ties allowed), or
    /// `None` when it could not be ranked (a miss).
    pub fn push(&mut self, rank: Option<f64>) {
        let (hr, ndcg) = match rank {
            Some(r) if r < self.k as f64 => (1.0, 1.0 / (r + 2.0).log2()),
            _ => (0.0, 0.0),
        };
        if self.recent.len() == self.window
            && let Some((h, n)) = self.recent.pop_front()
        {
            self.sum_hr -= h;
            self.sum_ndcg -= n;
        }
        self.recent.push_back((hr, ndcg));
        self.sum_hr += hr;
        self.sum_ndcg += ndcg;
        self.scored += 1;
    }

    /// HitRate@k over the window.
    pub fn hit_rate(&self) -> f64 {
        if self.recent.is_empty() {
            0.0
        } else {
            (self.sum_hr / self.recent.len() as f64).clamp(0.0, 1.0)
        }
    }

    /// NDCG@k over the window.
    pub fn ndcg(&self) -> f64 {
        if self.recent.is_empty() {
            0.0
        } else {
            (self.sum_ndcg / self.recent.len() as f64).clamp(0.0, 1.0)
        }
    }

    /// Events scored since the start.
    pub fn scored(&self) -> u64 {
        self.scored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_counts_hits_in_the_first_k() {
        let rel: HashSet<u32> = [1, 2, 3].into();
        assert_eq!(recall_at_k(&[1, 9, 2, 3], &rel, 2), Some(0.5));
        assert_eq!(recall_at_k(&[1, 9, 2, 3], &rel, 4), Some(1.0));
        assert_eq!(recall_at_k(&[9, 8], &rel, 10), Some(0.0));
        assert_eq!(recall_at_k(&[9, 8], &HashSet::new(), 10), None);
        let mut m = Mean::default();
        m.push(1.0);
        m.push(0.0);
        assert_eq!(m.value(), 0.5);
    }

    #[test]
    fn prequential_window_forgets_old_events() {
        let mut p = Prequential::new(10, 2);
        p.push(Some(0.0));
        assert_eq!((p.hit_rate(), p.ndcg()), (1.0, 1.0));
        p.push(None);
        assert_eq!(p.hit_rate(), 0.5);
        p.push(Some(20.0)); // the hit falls out of the window
        assert_eq!(p.hit_rate(), 0.0);
        p.push(Some(1.0));
        assert!((p.ndcg() - 0.5 / 3f64.log2()).abs() < 1e-12);
        assert_eq!(p.scored(), 4);
    }
}
