//! The offline evaluation protocol of docs/DESIGN.md §5.
//!
//! - Split: per-user leave-last-out by timestamp; ties are broken by input order, so the
//!   event that comes last in the file is held out. Users with a single event stay in
//!   training and are not scored. Or an explicit train/test pair, with no split.
//! - Ranking: full ranking over the catalog (every item of the training data) minus the
//!   user's training items (the held-out item itself stays rankable even if the user had
//!   it before). No sampled negatives (Krichene & Rendle, KDD 2020).
//! - Rank of the held-out item: items scoring strictly higher, plus half of those tying
//!   with it (the expected rank under random tie-breaking). An item missing from the
//!   catalog, or a user a model cannot score, counts as a miss.
//! - Metrics: HitRate@10, NDCG@10 (one relevant item: `1 / log2(rank + 2)`), MRR over the
//!   full ranking, and catalog coverage: the share of the catalog appearing in any
//!   user's top 10.

use std::collections::{HashMap, HashSet};

use recsys_schemas::Event;
use serde::Serialize;

use crate::model::Model;
use recsys_index::ids::IdMap;

pub const K: usize = 10;

/// A split: training events (in input order) and `(user, held-out item)` pairs.
#[derive(Debug, Clone, Default)]
pub struct Split {
    pub train: Vec<Event>,
    pub test: Vec<(String, String)>,
}

/// Per-user leave-last-out by timestamp, ties broken by input order.
pub fn leave_last_out(events: Vec<Event>) -> Split {
    // The held-out event of each user: the greatest (ts, position).
    let mut last: HashMap<&str, (i64, usize)> = HashMap::new();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (k, e) in events.iter().enumerate() {
        *count.entry(&e.user_id).or_default() += 1;
        let entry = last.entry(&e.user_id).or_insert((e.ts, k));
        if (e.ts, k) >= *entry {
            *entry = (e.ts, k);
        }
    }
    let held: HashSet<usize> = last
        .iter()
        .filter(|(u, _)| count[*u] >= 2)
        .map(|(_, &(_, k))| k)
        .collect();
    let mut split = Split::default();
    for (k, e) in events.into_iter().enumerate() {
        if held.contains(&k) {
            split.test.push((e.user_id, e.item_id));
        } else {
            split.train.push(e);
        }
    }
    split
}

/// Offline metrics of one model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Metrics {
    pub hr_at_10: f64,
    pub ndcg_at_10: f64,
    pub mrr: f64,
    pub coverage: f64,
    /// Test users scored.
    pub users: usize,
}

/// The catalog of a training set: item rows in first-seen order, each user's training
/// item rows, and plain interaction counts (for the popularity baseline).
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub items: IdMap,
    pub seen: HashMap<String, HashSet<u32>>,
    pub counts: Vec<f64>,
}

impl Catalog {
    pub fn new(train: &[Event]) -> Self {
        let mut c = Self::default();
        for e in train {
            c.add(e);
        }
        c
    }

    /// Adds one training event (for catalogs built while streaming).
    pub fn add(&mut self, e: &Event) {
        let row = self.items.get_or_insert(&e.item_id);
        if row as usize >= self.counts.len() {
            self.counts.resize(row as usize + 1, 0.0);
        }
        self.counts[row as usize] += 1.0;
        self.seen.entry(e.user_id.clone()).or_default().insert(row);
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Re-orders a model's item vectors (in the model's row order) into catalog order;
    /// catalog items the model never saw get zero vectors.
    pub fn align(&self, model_items: &IdMap, vectors: &[f32], dim: usize) -> Vec<f32> {
        let mut out = vec![0.0; self.len() * dim];
        for (row, id) in self.items.ids().iter().enumerate() {
            if let Some(m) = model_items.get(id) {
                let m = m as usize;
                out[row * dim..(row + 1) * dim].copy_from_slice(&vectors[m * dim..(m + 1) * dim]);
            }
        }
        out
    }
}

/// Scores a user against every catalog item.
pub trait Ranker: Sync {
    /// Fills `out` (one score per catalog row); `false` when the user cannot be scored.
    fn scores(&self, user: &str, out: &mut [f32]) -> bool;
}

/// A ranker from user vectors and catalog-aligned item vectors (dot product).
pub struct VectorRanker<'a, F: Fn(&str) -> Option<Vec<f32>> + Sync> {
    pub items: &'a [f32],
    pub dim: usize,
    pub user: F,
}

impl<F: Fn(&str) -> Option<Vec<f32>> + Sync> Ranker for VectorRanker<'_, F> {
    fn scores(&self, user: &str, out: &mut [f32]) -> bool {
        let Some(u) = (self.user)(user) else {
            return false;
        };
        for (s, item) in out.iter_mut().zip(self.items.chunks_exact(self.dim)) {
            *s = recsys_index::vector::dot(&u, item);
        }
        true
    }
}

/// Most popular training items first, the same for everyone.
pub struct PopularityRanker<'a>(pub &'a [f64]);

impl Ranker for PopularityRanker<'_> {
    fn scores(&self, _user: &str, out: &mut [f32]) -> bool {
        for (s, c) in out.iter_mut().zip(self.0) {
            *s = *c as f32;
        }
        true
    }
}

/// Scores a trained model on the test pairs: its item vectors aligned to the catalog,
/// the test users' vectors computed once (users it never saw are misses).
pub fn evaluate_model(
    model: &Model,
    catalog: &Catalog,
    test: &[(String, String)],
) -> crate::Result<Metrics> {
    let d = model.dim();
    let rows: Vec<u32> = (0..model.item_ids().len() as u32).collect();
    let items = catalog.align(model.item_ids(), &model.item_vectors(&rows)?, d);
    // Each known test user's row, and its position in the vectors computed below.
    let mut position: HashMap<&str, usize> = HashMap::new();
    let mut user_rows = Vec::new();
    for (u, _) in test {
        if let Some(r) = model.user_ids().get(u)
            && !position.contains_key(u.as_str())
        {
            position.insert(u, user_rows.len());
            user_rows.push(r);
        }
    }
    let vectors = model.user_vectors(&user_rows)?;
    let ranker = VectorRanker {
        items: &items,
        dim: d,
        user: |u: &str| {
            let k = *position.get(u)?;
            Some(vectors[k * d..(k + 1) * d].to_vec())
        },
    };
    Ok(evaluate(catalog, test, &ranker))
}

/// Scores every test pair with `ranker` on two threads and averages the metrics.
pub fn evaluate(catalog: &Catalog, test: &[(String, String)], ranker: &dyn Ranker) -> Metrics {
    let n = catalog.len();
    let empty = HashSet::new();
    let per_thread = test.len().div_ceil(2).max(1);
    let parts: Vec<(f64, f64, f64, HashSet<u32>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = test
            .chunks(per_thread)
            .map(|chunk| {
                let empty = &empty;
                s.spawn(move || {
                    let mut scores = vec![0.0f32; n];
                    let (mut hr, mut ndcg, mut mrr) = (0.0, 0.0, 0.0);
                    let mut covered = HashSet::new();
                    for (user, item) in chunk {
                        let seen = catalog.seen.get(user).unwrap_or(empty);
                        let target = catalog.items.get(item);
                        if n == 0 || !ranker.scores(user, &mut scores) {
                            continue;
                        }
                        let excluded = |r: u32| seen.contains(&r) && Some(r) != target;
                        for r in top_k(&scores, K, &excluded) {
                            covered.insert(r);
                        }
                        let Some(t) = target else { continue };
                        let st = scores[t as usize];
                        let (mut above, mut ties) = (0usize, 0usize);
                        for (r, &s) in scores.iter().enumerate() {
                            let r = r as u32;
                            if r == t || excluded(r) {
                                continue;
                            }
                            if s > st {
                                above += 1;
                            } else if s == st {
                                ties += 1;
                            }
                        }
                        let rank = above + ties / 2;
                        if rank < K {
                            hr += 1.0;
                            ndcg += 1.0 / ((rank + 2) as f64).log2();
                        }
                        mrr += 1.0 / (rank + 1) as f64;
                    }
                    (hr, ndcg, mrr, covered, chunk.len())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("evaluation thread"))
            .collect()
    });
    let mut m = Metrics::default();
    let mut covered = HashSet::new();
    for (hr, ndcg, mrr, c, users) in parts {
        m.hr_at_10 += hr;
        m.ndcg_at_10 += ndcg;
        m.mrr += mrr;
        m.users += users;
        covered.extend(c);
    }
    if m.users > 0 {
        let u = m.users as f64;
        m.hr_at_10 /= u;
        m.ndcg_at_10 /= u;
        m.mrr /= u;
    }
    m.coverage = if n == 0 {
        0.0
    } else {
        covered.len() as f64 / n as f64
    };
    m
}

/// The `k` best rows not excluded, best first (ties by row).
fn top_k(scores: &[f32], k: usize, excluded: &dyn Fn(u32) -> bool) -> Vec<u32> {
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    for (r, &s) in scores.iter().enumerate() {
        let r = r as u32;
        if excluded(r) || (best.len() == k && s <= best[k - 1].0) {
            continue;
        }
        let at = best.partition_point(|&(b, br)| b > s || (b == s && br < r));
        best.insert(at, (s, r));
        best.truncate(k);
    }
    best.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(u: &str, i: &str, ts: i64) -> Event {
        Event {
            user_id: u.into(),
            item_id: i.into(),
            kind: "interaction".into(),
            weight: 1.0,
            ts,
            event_id: None,
        }
    }

    #[test]
    fn leave_last_out_holds_out_the_latest_and_breaks_ties_by_file_order() {
        let split = leave_last_out(vec![
            ev("a", "x", 5),
            ev("a", "y", 9),
            ev("a", "z", 9), // ties with y at ts 9 and comes later: held out
            ev("b", "x", 3),
            ev("b", "w", 1),
            ev("c", "only", 1), // one event: training only
        ]);
        let mut test = split.test.clone();
        test.sort();
        assert_eq!(
            test,
            vec![("a".into(), "z".into()), ("b".into(), "x".into())]
        );
        assert_eq!(split.train.len(), 4);
        assert!(split.train.iter().any(|e| e.user_id == "c"));
    }

    struct Fixed(Vec<f32>);
    impl Ranker for Fixed {
        fn scores(&self, _: &str, out: &mut [f32]) -> bool {
            out.copy_from_slice(&self.0);
            true
        }
    }

    #[test]
    fn metrics_of_known_ranks() {
        // Catalog rows: a=0, b=1, c=2, d=3. User u saw a.
        let train = vec![
            ev("u", "a", 0),
            ev("v", "b", 0),
            ev("v", "c", 0),
            ev("v", "d", 0),
        ];
        let cat = Catalog::new(&train);
        // a is excluded for u; b scores highest, then d, then c: c is at rank 2.
        let r = Fixed(vec![9.0, 3.0, 1.0, 2.0]);
        let m = evaluate(&cat, &[("u".into(), "c".into())], &r);
        assert_eq!(m.users, 1);
        assert_eq!(m.hr_at_10, 1.0);
        assert!((m.ndcg_at_10 - 1.0 / 4f64.log2()).abs() < 1e-12);
        assert!((m.mrr - 1.0 / 3.0).abs() < 1e-12);
        assert!((m.coverage - 3.0 / 4.0).abs() < 1e-12, "b, c, d of 4 items");
        // An unknown held-out item is a miss but still counts as a user.
        let m = evaluate(&cat, &[("u".into(), "new".into())], &r);
        assert_eq!((m.users, m.hr_at_10, m.mrr), (1, 0.0, 0.0));
        // Ties: everything equal puts the target in the middle of the other 2.
        let m = evaluate(&cat, &[("u".into(), "c".into())], &Fixed(vec![1.0; 4]));
        assert!((m.mrr - 1.0 / 2.0).abs() < 1e-12, "{}", m.mrr);
    }

    #[test]
    fn top_k_skips_excluded_and_orders() {
        let s = [0.5, 0.9, 0.1, 0.9, 0.7];
        assert_eq!(top_k(&s, 3, &|r| r == 1), vec![3, 4, 0]);
        assert_eq!(top_k(&s, 2, &|_| false), vec![1, 3]);
    }
}
