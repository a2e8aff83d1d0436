//! The search loop of every list endpoint: FAISS skips the excluded items; items another
//! filter refuses (a category) make it ask for more until `k` are left.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use recsys_index::ItemIndex;
use recsys_schemas::api::ScoredItem;

use super::state::AppState;
use crate::Result;
use crate::catalog::Catalog;

/// Item ids never to return: the user's recent items and the request's `exclude`,
/// borrowed from them. foldhash (randomly seeded per process) rather than SipHash: the
/// set is built and probed on every request, and SipHash was 2.5% of the server's CPU
/// at 5,000 req/s.
pub(super) type Exclude<'a> = HashSet<&'a str, foldhash::fast::RandomState>;

/// Searches `index` for `query` and keeps up to `k` items passing `keep`. The items in
/// `exclude` (catalog ids) are left out by the search itself, so they cost no re-rank
/// depth; items `keep` refuses (another category) make it ask for more (×4 each round)
/// while fewer than `k` are left.
pub(super) async fn search_filtered<'a>(
    state: &AppState,
    catalog: &Catalog,
    index: Arc<ItemIndex>,
    query: &[f32],
    k: usize,
    exclude: impl IntoIterator<Item = &'a str>,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<ScoredItem>> {
    let started = Instant::now();
    let rows: Vec<u64> = exclude
        .into_iter()
        .filter_map(|item| catalog.ids.get(item).map(u64::from))
        .collect();
    let mut fetch = k;
    let items = loop {
        fetch = fetch.min(index.len());
        let hits = state.search.search(&index, query, fetch, &rows).await?;
        let items: Vec<ScoredItem> = hits
            .iter()
            .filter_map(|&(row, score)| {
                let item = catalog.ids.id(row as u32)?;
                keep(item).then(|| ScoredItem {
                    item_id: item.to_owned(),
                    score,
                })
            })
            .take(k)
            .collect();
        if items.len() >= k || fetch >= index.len() || hits.len() < fetch {
            break items;
        }
        fetch *= 4;
    };
    state.metrics.search.observe(started.elapsed());
    Ok(items)
}
