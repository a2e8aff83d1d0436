//! Test-then-train scoring as serving answers: an event's item ranked, before the model
//! learns from it, in the list serving would give its user at that moment. The live
//! trainer's prequential metric and every arm of the streaming evaluation
//! (`crate::replay`) rank through [`rank_as_served`], so the two are one computation.
//!
//! Serving's path: the user's own vector if there is one, else a fold-in of their recent
//! items ([`recsys_index::fold_in::fold_in_with`], the function serving calls), else the
//! popular list; the user's recent items are never recommended. The ranking here is
//! exact, over every item with a vector (or a popularity count), where serving searches
//! an approximate index: this measures the model, not the index.

use recsys_index::vector::dot;
use recsys_schemas::api::Source;

/// Where the ranking of one event came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    /// 0-based rank of the event's item among the items serving could return (items
    /// strictly above it plus half of those tying with it); `None` when it could not be
    /// returned at all (no vector, no popularity count, or among the user's recent
    /// items).
    pub rank: Option<f64>,
    /// The path serving would take for this user.
    pub source: Source,
}

impl Ranked {
    /// HitRate@k, NDCG@k and reciprocal rank of this one event.
    pub fn gains(&self, k: usize) -> (f64, f64, f64) {
        match self.rank {
            Some(r) if r < k as f64 => (1.0, 1.0 / (r + 2.0).log2(), 1.0 / (r + 1.0)),
            Some(r) => (0.0, 0.0, 1.0 / (r + 1.0)),
            None => (0.0, 0.0, 0.0),
        }
    }
}

/// What serving holds at the moment of scoring, over the rows `0..items` of some
/// catalog.
pub trait ServedState {
    fn dim(&self) -> usize;
    fn items(&self) -> usize;
    /// The item vector at catalog row `row`, if serving's index holds one.
    fn item_vector(&self, row: u32) -> Option<&[f32]>;
    /// The decayed popularity of row `row` (0: not in the popular list).
    fn popularity(&self, row: u32) -> f64;
    /// The catalog row of an item id.
    fn row(&self, item: &str) -> Option<u32>;
}

/// Ranks `target` for a user whose own vector is `user_vector` (if serving has one) and
/// whose recent items (newest first, as serving reads them) are `recent`.
pub fn rank_as_served<'a>(
    state: &dyn ServedState,
    user_vector: Option<&[f32]>,
    recent: impl Iterator<Item = &'a str> + Clone,
    target: &str,
) -> Ranked {
    let mut excluded = vec![false; state.items()];
    for row in recent.clone().filter_map(|i| state.row(i)) {
        if let Some(x) = excluded.get_mut(row as usize) {
            *x = true;
        }
    }
    let is_excluded = |row: u32| excluded.get(row as usize).copied().unwrap_or(false);
    let target_row = state.row(target);
    let personal = user_vector.filter(|v| v.len() == state.dim() && state.items() > 0);
    let (source, query) = match personal {
        Some(v) => (Source::Personal, Some(v.to_vec())),
        None => match recsys_index::fold_in::fold_in_with(state.dim(), recent, |item| {
            state.row(item).and_then(|r| state.item_vector(r))
        }) {
            Some(q) => (Source::FoldIn, Some(q)),
            None => (Source::Popular, None),
        },
    };
    let Some(target_row) = target_row.filter(|&r| !is_excluded(r)) else {
        return Ranked { rank: None, source };
    };
    let score = |row: u32| -> Option<f64> {
        match &query {
            Some(q) => state.item_vector(row).map(|v| f64::from(dot(q, v))),
            None => Some(state.popularity(row)).filter(|&p| p > 0.0),
        }
    };
    let Some(mine) = score(target_row) else {
        return Ranked { rank: None, source };
    };
    let (mut above, mut ties) = (0usize, 0usize);
    for row in 0..state.items() as u32 {
        if row == target_row || is_excluded(row) {
            continue;
        }
        match score(row) {
            Some(s) if s > mine => above += 1,
            Some(s) if s == mine => ties += 1,
            _ => {}
        }
    }
    Ranked {
        rank: Some(above as f64 + ties as f64 / 2.0),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed {
        vectors: Vec<Option<[f32; 2]>>,
        popular: Vec<f64>,
    }

    impl ServedState for Fixed {
        fn dim(&self) -> usize {
            2
        }
        fn items(&self) -> usize {
            self.vectors.len()
        }
        fn item_vector(&self, row: u32) -> Option<&[f32]> {
            self.vectors[row as usize].as_ref().map(|v| &v[..])
        }
        fn popularity(&self, row: u32) -> f64 {
            self.popular[row as usize]
        }
        fn row(&self, item: &str) -> Option<u32> {
            item.strip_prefix('i')?.parse().ok()
        }
    }

    fn state() -> Fixed {
        Fixed {
            vectors: vec![
                Some([1.0, 0.0]),
                Some([0.9, 0.1]),
                Some([0.0, 1.0]),
                None,
                Some([0.5, 0.5]),
            ],
            popular: vec![5.0, 0.0, 3.0, 9.0, 3.0],
        }
    }

    #[test]
    fn personal_vectors_rank_by_inner_product_skipping_recent_items() {
        let s = state();
        // Query (1, 0): i0 1.0, i1 0.9, i4 0.5, i2 0.0; i3 has no vector.
        let r = rank_as_served(&s, Some(&[1.0, 0.0]), ["i0"].into_iter(), "i4");
        assert_eq!(r.source, Source::Personal);
        assert_eq!(r.rank, Some(1.0), "i1 above it, i0 excluded");
        let r = rank_as_served(&s, Some(&[1.0, 0.0]), [].into_iter(), "i3");
        assert_eq!(r.rank, None, "no vector, cannot be returned");
        let r = rank_as_served(&s, Some(&[1.0, 0.0]), ["i4"].into_iter(), "i4");
        assert_eq!(r.rank, None, "a recent item is never recommended");
        assert_eq!(r.gains(10), (0.0, 0.0, 0.0));
    }

    #[test]
    fn without_a_vector_recent_items_fold_in_else_popularity_answers() {
        let s = state();
        // Fold-in of i2 (0, 1): i4 0.5 is the best left.
        let r = rank_as_served(&s, None, ["i2", "unknown"].into_iter(), "i4");
        assert_eq!((r.source, r.rank), (Source::FoldIn, Some(0.0)));
        // No known recent item: popularity, ties counted half (i2 and i4 both 3).
        let r = rank_as_served(&s, None, ["unknown"].into_iter(), "i2");
        assert_eq!((r.source, r.rank), (Source::Popular, Some(2.5)));
        let r = rank_as_served(&s, None, [].into_iter(), "i1");
        assert_eq!(r.rank, None, "not in the popular list");
        let (hr, ndcg, mrr) = Ranked {
            rank: Some(0.0),
            source: Source::Popular,
        }
        .gains(10);
        assert_eq!((hr, ndcg, mrr), (1.0, 1.0, 1.0));
    }
}
