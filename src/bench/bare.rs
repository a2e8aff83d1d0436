//! The bare costs of a personal recommendation: the user-store lookup and the index
//! search, each timed alone on a thread set up as an HTTP worker is.

use std::time::Instant;

use anyhow::Context;

use super::p50;

/// Samples of each bare measurement.
pub(super) const BARE_SAMPLES: usize = 2_000;

/// p50s, ms, of the two calls a personal recommendation makes, each timed alone.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bare {
    pub(super) search_ms: f64,
    pub(super) redis_ms: f64,
}

/// The bare costs, on the calling thread set up as an HTTP worker is (a single-threaded
/// event loop, one-thread FAISS searches): the user-store lookup serving does (vector +
/// history, one round trip) and the index search it does (k = 10, the user's history
/// excluded), [`BARE_SAMPLES`] of each, alternating, for users from `first_user` on
/// (spread over the `users`).
pub(super) fn bare_costs(
    store: &dyn recsys_serving::UserVectorStore,
    catalog: &recsys_serving::Catalog,
    vectors: &[f32],
    dim: usize,
    users: usize,
    first_user: usize,
) -> anyhow::Result<Bare> {
    recsys_index::single_threaded_searches();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut redis_ms = Vec::with_capacity(BARE_SAMPLES);
    let mut search_ms = Vec::with_capacity(BARE_SAMPLES);
    let mut failed = 0usize;
    let index = catalog.index.as_ref().context("the catalog has no index")?;
    for n in 0..BARE_SAMPLES {
        let u = (first_user + n * 7919) % users;
        let t = Instant::now();
        // A lookup past the 50 ms budget (a hiccup of the shared machine) counts with the
        // time it took; only a store that keeps failing ends the bench.
        let recent = match rt.block_on(store.get(1, &format!("u{u}"), 500)) {
            Ok(record) => record.recent,
            Err(_) => {
                failed += 1;
                anyhow::ensure!(failed <= 50, "the bare Redis lookup failed {failed} times");
                Default::default()
            }
        };
        redis_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let q = &vectors[u * dim..(u + 1) * dim];
        let exclude: Vec<u64> = recent
            .iter()
            .filter_map(|item| catalog.ids.get(item).map(u64::from))
            .collect();
        let t = Instant::now();
        index.search_excluding(q, 10, &exclude)?;
        search_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Bare {
        search_ms: p50(search_ms),
        redis_ms: p50(redis_ms),
    })
}
