//! `recsys bench index`: the item index on this machine, per configuration, on clustered
//! synthetic item vectors; and the time from publishing a 10k-item delta on the
//! `item-vectors` topic to it being searchable in a replica.
//!
//! Every number comes from running the real code path: `ItemIndex::build`, `search`,
//! `search_batch`, and for the delta the trainer's Kafka sink and the serving follower on
//! an embedded broker.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::{RngExt, SeedableRng, rngs::StdRng};
use recsys_engine::index::{IndexConfig, ItemIndex};
use recsys_serving::{CatalogHolder, FollowConfig, ItemFollower};
use recsys_trainer::sink::{ItemUpdate, ItemVectorSink, KafkaItemVectorSink};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::embedded::EmbeddedKafka;

#[derive(Debug, Clone)]
pub struct IndexBenchOptions {
    pub items: Vec<usize>,
    pub dim: usize,
    /// Queries for recall and batched QPS.
    pub queries: usize,
    /// Each single-query QPS measurement runs at least this long.
    pub min_seconds: f64,
    pub seed: u64,
    /// Catalog size of the replica in the delta measurement.
    pub delta_base_items: usize,
    pub delta_items: usize,
}

impl Default for IndexBenchOptions {
    fn default() -> Self {
        Self {
            items: vec![100_000, 1_000_000],
            dim: 64,
            queries: 1_000,
            min_seconds: 2.0,
            seed: 5,
            delta_base_items: 100_000,
            delta_items: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IndexRow {
    pub items: usize,
    pub config: String,
    pub factory: String,
    pub build_s: f64,
    /// FAISS structure plus the raw vectors kept for re-ranking and fold-in.
    pub memory_bytes: usize,
    pub faiss_bytes: usize,
    pub recall_at_10: f64,
    /// One query per call, one thread.
    pub qps_single: f64,
    /// One query per call from two threads sharing the index.
    pub qps_single_2_threads: f64,
    /// All queries in one call (FAISS parallelises over them).
    pub qps_batched: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct IndexBenchReport {
    pub rows: Vec<IndexRow>,
    pub delta_10k_searchable_ms: f64,
    pub delta_base_items: usize,
    pub delta_items: usize,
}

/// Items and queries around shared cluster centres, the shape of trained embeddings;
/// the noise is as wide as the spread of the centres, so clusters overlap.
fn clustered(n: usize, queries: usize, dim: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let clusters = ((n as f64).sqrt() as usize).clamp(16, 2_000);
    let centres: Vec<f32> = (0..clusters * dim)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let draw = |rng: &mut StdRng, out: &mut Vec<f32>| {
        let c = rng.random_range(0..clusters);
        out.extend((0..dim).map(|j| centres[c * dim + j] + rng.random_range(-1.0f32..1.0)));
    };
    let mut items = Vec::with_capacity(n * dim);
    for _ in 0..n {
        draw(&mut rng, &mut items);
    }
    let mut qs = Vec::with_capacity(queries * dim);
    for _ in 0..queries {
        draw(&mut rng, &mut qs);
    }
    (items, qs)
}

fn qps_single(
    index: &ItemIndex,
    queries: &[f32],
    dim: usize,
    threads: usize,
    min_s: f64,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let done = std::thread::scope(|s| -> anyhow::Result<usize> {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> anyhow::Result<usize> {
                    let mut n = 0usize;
                    let qs: Vec<&[f32]> = queries.chunks_exact(dim).collect();
                    let mut i = t;
                    while started.elapsed().as_secs_f64() < min_s || n == 0 {
                        index.search(qs[i % qs.len()], 10)?;
                        n += 1;
                        i += threads;
                    }
                    Ok(n)
                })
            })
            .collect();
        let mut total = 0;
        for w in workers {
            total += w
                .join()
                .map_err(|_| anyhow::anyhow!("search thread panicked"))??;
        }
        Ok(total)
    })?;
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

fn recall(index: &ItemIndex, queries: &[f32], truth: &[HashSet<u64>]) -> anyhow::Result<f64> {
    let answers = index.search_batch(queries, 10)?;
    let hits: usize = answers
        .iter()
        .zip(truth)
        .map(|(a, t)| a.iter().filter(|x| t.contains(&x.0)).count())
        .sum();
    Ok(hits as f64 / (10 * truth.len()) as f64)
}

pub async fn index(opts: IndexBenchOptions) -> anyhow::Result<IndexBenchReport> {
    let dim = opts.dim;
    let mut rows = Vec::new();
    for &n in &opts.items {
        let (items, queries) = clustered(n, opts.queries, dim, opts.seed);
        let ids: Vec<u64> = (0..n as u64).collect();
        // The factory strings the size-based default would pick, forced per row.
        let sized = |below: usize| IndexConfig {
            flat_below: 0,
            ivf_flat_below: below,
            ..IndexConfig::default()
        };
        let ivf_flat = sized(usize::MAX).factory_for(n, dim);
        let ivf_pq = sized(0).factory_for(n, dim);
        let configs: Vec<(&str, String, usize)> = vec![
            ("flat", "IDMap2,Flat".into(), 1),
            ("ivf_flat", ivf_flat, 1),
            ("ivf_pq", ivf_pq.clone(), 1),
            (
                "ivf_pq_rerank",
                ivf_pq,
                IndexConfig::default().rerank_factor,
            ),
        ];
        let mut truth: Vec<HashSet<u64>> = Vec::new();
        let mut pq: Option<(ItemIndex, f64)> = None;
        for (name, factory, rerank) in configs {
            let cfg = IndexConfig {
                factory: Some(factory.clone()),
                rerank_factor: rerank,
                ..IndexConfig::default()
            };
            // The re-ranked IVF-PQ shares its FAISS structure with plain IVF-PQ; only the
            // re-rank depth differs, so it is not built twice.
            let (index, build_s) = match pq.take() {
                Some((built, s)) if name == "ivf_pq_rerank" => {
                    (built.with_rerank_factor(rerank), s)
                }
                _ => {
                    eprintln!("building {name} ({factory}) over {n} items");
                    let started = Instant::now();
                    let index =
                        tokio::task::block_in_place(|| ItemIndex::build(dim, &cfg, &ids, &items))?;
                    (index, started.elapsed().as_secs_f64())
                }
            };
            if name == "flat" {
                // Flat is exact: its answers are the ground truth for the others.
                truth = index
                    .search_batch(&queries, 10)?
                    .into_iter()
                    .map(|a| a.into_iter().map(|x| x.0).collect())
                    .collect();
            }
            let recall_at_10 = recall(&index, &queries, &truth)?;
            let single = tokio::task::block_in_place(|| {
                qps_single(&index, &queries, dim, 1, opts.min_seconds)
            })?;
            let two = tokio::task::block_in_place(|| {
                qps_single(&index, &queries, dim, 2, opts.min_seconds)
            })?;
            let started = Instant::now();
            index.search_batch(&queries, 10)?;
            let qps_batched = opts.queries as f64 / started.elapsed().as_secs_f64();
            let faiss_bytes = index.faiss_bytes()?;
            let row = IndexRow {
                items: n,
                config: name.into(),
                factory,
                build_s,
                memory_bytes: faiss_bytes + index.raw_bytes(),
                faiss_bytes,
                recall_at_10,
                qps_single: single,
                qps_single_2_threads: two,
                qps_batched,
            };
            eprintln!(
                "  {:<14} build {:>7.2}s  memory {:>6.1} MB (FAISS {:>6.1} MB)  recall@10 {:.3}  \
                 single {:>8.0}/s  2 threads {:>8.0}/s  batched {:>8.0}/s",
                row.config,
                row.build_s,
                row.memory_bytes as f64 / 1e6,
                row.faiss_bytes as f64 / 1e6,
                row.recall_at_10,
                row.qps_single,
                row.qps_single_2_threads,
                row.qps_batched
            );
            rows.push(row);
            if name == "ivf_pq" {
                pq = Some((index, build_s));
            }
        }
    }
    let delta_ms = delta(&opts).await?;
    Ok(IndexBenchReport {
        rows,
        delta_10k_searchable_ms: delta_ms,
        delta_base_items: opts.delta_base_items,
        delta_items: opts.delta_items,
    })
}

/// Publishes a base catalog through the trainer's Kafka sink, lets a replica catch up,
/// then times a `delta_items` delta from the start of its publish to the moment every
/// changed item carries its new vector in the replica's index.
async fn delta(opts: &IndexBenchOptions) -> anyhow::Result<f64> {
    let dim = opts.dim;
    // 16 partitions: the mock broker keeps only the newest 5 MB of each partition, and the
    // base catalog is published before the replica starts reading.
    let kafka = EmbeddedKafka::start(&[("item-vectors", 16), ("item-popularity", 1)])?;
    let brokers = kafka.bootstrap_servers().to_owned();
    let sink = KafkaItemVectorSink::new(&brokers, "item-vectors", "item-popularity")?;
    let (base, _) = clustered(opts.delta_base_items, 0, dim, opts.seed + 1);
    let updates = |range: std::ops::Range<usize>, vectors: &[f32]| -> Vec<ItemUpdate> {
        range
            .map(|i| ItemUpdate {
                item_id: format!("item-{i}"),
                vector: vectors[i * dim..(i + 1) * dim].to_vec(),
            })
            .collect()
    };
    sink.publish_items(1, updates(0..opts.delta_base_items, &base))
        .await?;

    let catalog = Arc::new(CatalogHolder::new(1, IndexConfig::default()));
    let follower = ItemFollower::new(
        FollowConfig {
            brokers: brokers.clone(),
            ..FollowConfig::default()
        },
        1,
        catalog.clone(),
    )?;
    let status = follower.status();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(follower.run(cancel.clone()));
    let deadline = Instant::now() + Duration::from_secs(300);
    while !status.is_ready() {
        if Instant::now() > deadline || task.is_finished() {
            bail!("replica did not catch up with the base catalog");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if catalog.load().item_count() != opts.delta_base_items {
        bail!(
            "replica caught up with {} of {} items",
            catalog.load().item_count(),
            opts.delta_base_items
        );
    }
    eprintln!(
        "replica caught up with {} items ({})",
        catalog.load().item_count(),
        catalog.load().index.as_ref().map_or("-", |i| i.factory())
    );

    // The delta: new vectors for the first `delta_items` items.
    let (fresh, _) = clustered(opts.delta_items, 0, dim, opts.seed + 2);
    let delta = updates(0..opts.delta_items, &fresh);
    let probe: Vec<(String, Vec<f32>)> = delta
        .iter()
        .map(|u| (u.item_id.clone(), u.vector.clone()))
        .collect();
    let started = Instant::now();
    sink.publish_items(1, delta).await?;
    let published_ms = started.elapsed().as_secs_f64() * 1e3;
    let updated = |c: &recsys_serving::Catalog| {
        let Some(index) = c.index.as_ref() else {
            return false;
        };
        probe.iter().all(|(item, v)| {
            c.ids.get(item).and_then(|row| index.vector(u64::from(row))) == Some(v.as_slice())
        })
    };
    loop {
        let c = catalog.load();
        if updated(&c) {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the delta was not searchable after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let searchable_ms = started.elapsed().as_secs_f64() * 1e3;
    eprintln!(
        "delta of {} items over {} searchable {searchable_ms:.0} ms after its publish started \
         (publish acknowledged after {published_ms:.0} ms)",
        opts.delta_items, opts.delta_base_items
    );
    cancel.cancel();
    task.await.context("follower task")??;
    Ok(searchable_ms)
}
