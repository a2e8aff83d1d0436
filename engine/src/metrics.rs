//! Ranking metrics over full rankings (no sampled negatives, see DESIGN §5).

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
}
