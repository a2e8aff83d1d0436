//! The synthetic generator's oracle: every user's true preference for every item, as a
//! ranker, so recall against the truth can be reported beside the models'.

use super::protocol::{Catalog, Ranker};
use crate::synth::SynthData;

/// The synthetic generator's true preference of each user for each catalog item.
pub(super) struct OracleRanker<'a> {
    data: &'a SynthData,
    /// Catalog row → item number in the generator.
    item_number: Vec<usize>,
}

impl<'a> OracleRanker<'a> {
    pub(super) fn new(data: &'a SynthData, catalog: &Catalog) -> Self {
        let item_number = catalog
            .items
            .ids()
            .iter()
            .map(|id| id.trim_start_matches('i').parse().unwrap_or(usize::MAX))
            .collect();
        Self { data, item_number }
    }
}

impl Ranker for OracleRanker<'_> {
    fn scores(&self, user: &str, out: &mut [f32]) -> bool {
        let Ok(u) = user.trim_start_matches('u').parse::<usize>() else {
            return false;
        };
        if u >= self.data.user_clusters.len() {
            return false;
        }
        let truth = self.data.true_scores(u);
        for (s, &i) in out.iter_mut().zip(&self.item_number) {
            *s = truth.get(i).copied().unwrap_or(0.0) as f32;
        }
        true
    }
}
