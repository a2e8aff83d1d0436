//! Where one served IVF-PQ search spends its time (FAISS's candidate search, then the
//! exact re-rank). `cargo test -p recsys-index --lib ann::timing -- --ignored --nocapture`

use super::ffi::search_shared;
use super::*;
use rand::{RngExt, SeedableRng, rngs::StdRng};
use std::time::Instant;

#[test]
#[ignore = "timing, not a check: run by hand"]
fn search_phases() {
    let (n, dim, clusters) = (100_000usize, 64usize, 316usize);
    let mut rng = StdRng::seed_from_u64(3);
    let centres: Vec<f32> = (0..clusters * dim)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let mut draw = |count: usize| -> Vec<f32> {
        (0..count)
            .flat_map(|_| {
                let c = rng.random_range(0..clusters);
                (0..dim)
                    .map(|j| centres[c * dim + j] + rng.random_range(-1.0f32..1.0))
                    .collect::<Vec<f32>>()
            })
            .collect()
    };
    let data = draw(n);
    let queries = draw(2_000);
    let ids: Vec<u64> = (0..n as u64).collect();
    let cfg = IndexConfig {
        flat_below: 0,
        ivf_flat_below: 0,
        ..IndexConfig::default()
    };
    let index = ItemIndex::build(dim, &cfg, &ids, &data).unwrap();
    single_threaded_searches();
    println!(
        "{} over {n} items, FAISS AVX2: {FAISS_AVX2}",
        index.factory()
    );
    let p50 = |mut xs: Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    let exact: Vec<Vec<u64>> = queries
        .chunks_exact(dim)
        .take(300)
        .map(|q| index.exact_search(q, 10).iter().map(|h| h.0).collect())
        .collect();
    for factor in [5usize, 10, 15, 20, 30] {
        let index = index.try_clone().unwrap().with_rerank_factor(factor);
        let hits: usize = queries
            .chunks_exact(dim)
            .zip(&exact)
            .map(|(q, want)| {
                let got = index.search(q, 10).unwrap();
                got.iter().filter(|h| want.contains(&h.0)).count()
            })
            .sum();
        let mut times: Vec<f64> = queries
            .chunks_exact(dim)
            .map(|q| {
                let t = Instant::now();
                std::hint::black_box(index.search(q, 15).unwrap());
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!(
            "re-rank factor {factor:>2}: Recall@10 {:.4}, k 15 search p50 {:.1} µs",
            hits as f64 / (10 * exact.len()) as f64,
            times[times.len() / 2]
        );
    }
    for k in [10usize, 15] {
        let fetch = k * index.rerank_factor;
        let (mut faiss, mut rerank, mut whole) = (vec![], vec![], vec![]);
        for q in queries.chunks_exact(dim) {
            // The whole search first, while this query's candidates are likely not cached.
            let t = Instant::now();
            std::hint::black_box(index.search(q, k).unwrap());
            whole.push(t.elapsed().as_secs_f64() * 1e6);
            // Then the two phases alone (the candidates now cached).
            let t = Instant::now();
            let labels = search_shared(&index.inner, q, 1, fetch).unwrap();
            faiss.push(t.elapsed().as_secs_f64() * 1e6);
            let t = Instant::now();
            std::hint::black_box(index.rerank(q, &labels, k));
            rerank.push(t.elapsed().as_secs_f64() * 1e6);
        }
        println!(
            "k {k} (fetch {fetch}): FAISS p50 {:.1} µs, re-rank p50 {:.1} µs, search p50 {:.1} µs",
            p50(faiss),
            p50(rerank),
            p50(whole)
        );
    }
    // k 10 with a user's recent items excluded (random ids, as many as the bench's
    // history and as `trainer.history_len`): FAISS skipping them, against asking for
    // them on top and dropping them afterwards.
    for recent in [5usize, 500] {
        let (mut skipped, mut cut) = (vec![], vec![]);
        for (i, q) in queries.chunks_exact(dim).enumerate() {
            let exclude: Vec<u64> = (0..recent as u64)
                .map(|j| (i as u64 * 7919 + j * 104_729) % n as u64)
                .collect();
            let skip = || {
                let t = Instant::now();
                std::hint::black_box(index.search_excluding(q, 10, &exclude).unwrap());
                t.elapsed().as_secs_f64() * 1e6
            };
            let cut_after = || {
                let t = Instant::now();
                let kept: Vec<(u64, f32)> = index
                    .search(q, 10 + recent)
                    .unwrap()
                    .into_iter()
                    .filter(|(id, _)| !exclude.contains(id))
                    .take(10)
                    .collect();
                std::hint::black_box(kept);
                t.elapsed().as_secs_f64() * 1e6
            };
            // Each query's second search finds its lists cached: alternate the order.
            if i % 2 == 0 {
                skipped.push(skip());
                cut.push(cut_after());
            } else {
                cut.push(cut_after());
                skipped.push(skip());
            }
        }
        println!(
            "k 10, {recent} recent excluded: skipped by FAISS p50 {:.1} µs, asked for and \
             cut p50 {:.1} µs",
            p50(skipped),
            p50(cut)
        );
    }
}
