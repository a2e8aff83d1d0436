//! Fold-in: a query vector for a user without one of their own (new to the model, or
//! their vector expired), from the vectors of the items they touched last. Serving
//! answers such users this way, and the streaming evaluation scores them the same way.

use crate::ItemIndex;
use crate::ids::IdMap;

/// Recent items averaged into a fold-in vector.
pub const FOLD_IN_ITEMS: usize = 50;

/// The mean of the index vectors of those of the first [`FOLD_IN_ITEMS`] of `recent`
/// (newest first) that the index holds; `None` when it holds none of them.
pub fn fold_in<'a>(
    ids: &IdMap,
    index: &ItemIndex,
    recent: impl IntoIterator<Item = &'a str>,
) -> Option<Vec<f32>> {
    fold_in_with(index.dim(), recent, |item| {
        ids.get(item).and_then(|row| index.vector(u64::from(row)))
    })
}

/// [`fold_in`] over any source of item vectors of dimension `dim`: the mean of
/// `vector(item)` over those of the first [`FOLD_IN_ITEMS`] of `recent` it knows. The streaming
/// evaluation folds users in through this, with its own copy of what serving holds.
pub fn fold_in_with<'a, 'v>(
    dim: usize,
    recent: impl IntoIterator<Item = &'a str>,
    vector: impl Fn(&str) -> Option<&'v [f32]>,
) -> Option<Vec<f32>> {
    let mut sum = vec![0.0f32; dim];
    let mut n = 0usize;
    for item in recent.into_iter().take(FOLD_IN_ITEMS) {
        let Some(v) = vector(item) else {
            continue;
        };
        sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
        n += 1;
    }
    (n > 0).then(|| sum.into_iter().map(|s| s / n as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IndexConfig;

    #[test]
    fn averages_the_newest_known_items_only() {
        let mut ids = IdMap::new();
        let rows: Vec<u64> = ["a", "b", "c"]
            .iter()
            .map(|i| u64::from(ids.get_or_insert(i)))
            .collect();
        let vectors = [1.0, 0.0, 0.0, 1.0, 3.0, 3.0];
        let index = ItemIndex::build(2, &IndexConfig::default(), &rows, &vectors).unwrap();
        assert_eq!(
            fold_in(&ids, &index, ["unknown", "a", "b"]),
            Some(vec![0.5, 0.5])
        );
        assert_eq!(fold_in(&ids, &index, ["unknown"]), None);
        // Only the newest FOLD_IN_ITEMS count: "c" comes after 50 copies of "a".
        let many: Vec<&str> = std::iter::repeat_n("a", FOLD_IN_ITEMS)
            .chain(["c"])
            .collect();
        assert_eq!(fold_in(&ids, &index, many), Some(vec![1.0, 0.0]));
    }
}
