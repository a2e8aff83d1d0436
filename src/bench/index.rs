//! `recsys bench index`: the item index on this machine, per configuration, on clustered
//! synthetic item vectors or a checkpoint's trained ones: build time, memory, Recall@10
//! against exact search, single-thread and batched QPS; and the delta freshness of
//! `delta.rs`.

use std::collections::HashSet;
use std::time::Instant;

use anyhow::{Context, bail};
use rand::{SeedableRng, rngs::StdRng};
use recsys_index::{IndexConfig, ItemIndex};
use serde::Serialize;

use super::clustered;
use super::delta::{DeltaSize, delta};

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
    /// Re-rank depths measured on the IVF-PQ index (recall and speed each).
    pub rerank_factors: Vec<usize>,
    /// A checkpoint whose trained item vectors replace the synthetic catalogs, with
    /// `queries` of its user vectors (a seeded sample) as the queries.
    pub checkpoint: Option<std::path::PathBuf>,
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
            rerank_factors: vec![5, 8, 10, 20],
            checkpoint: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IndexRow {
    /// `synthetic` or the checkpoint's path.
    pub data: String,
    pub items: usize,
    pub config: String,
    pub factory: String,
    /// Candidates fetched per result and re-ranked exactly (1 = none).
    pub rerank_factor: usize,
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

/// Item vectors and queries of one measured catalog: synthetic clusters of `n`, or a
/// checkpoint's trained items with a sample of its users as queries.
struct IndexData {
    label: String,
    dim: usize,
    items: Vec<f32>,
    queries: Vec<f32>,
}

fn checkpoint_data(path: &std::path::Path, queries: usize, seed: u64) -> anyhow::Result<IndexData> {
    use rand::seq::SliceRandom;
    let device = recsys_engine::device::cpu_autodiff_device();
    let (model, _) = recsys_engine::checkpoint::load(path, device)
        .with_context(|| format!("loading {}", path.display()))?;
    let live = |ids: &[String]| -> Vec<u32> {
        (0..ids.len() as u32)
            .filter(|&r| !ids[r as usize].is_empty())
            .collect()
    };
    let item_rows = live(model.item_ids().ids());
    let mut user_rows = live(model.user_ids().ids());
    user_rows.shuffle(&mut StdRng::seed_from_u64(seed));
    user_rows.truncate(queries);
    if item_rows.is_empty() || user_rows.is_empty() {
        bail!("{} holds no items or no users", path.display());
    }
    Ok(IndexData {
        label: path.display().to_string(),
        dim: model.dim(),
        items: model.item_vectors(&item_rows)?,
        queries: model.user_vectors(&user_rows)?,
    })
}

/// `base` is the effective `[index]` configuration: every row searches with its `nprobe`
/// (and the delta replica uses it whole); each row forces its own kind and re-rank depth.
pub async fn index(opts: IndexBenchOptions, base: IndexConfig) -> anyhow::Result<IndexBenchReport> {
    let data = match &opts.checkpoint {
        Some(path) => vec![tokio::task::block_in_place(|| {
            checkpoint_data(path, opts.queries, opts.seed)
        })?],
        None => opts
            .items
            .iter()
            .map(|&n| {
                let (items, queries) = clustered(n, opts.queries, opts.dim, opts.seed);
                IndexData {
                    label: "synthetic".into(),
                    dim: opts.dim,
                    items,
                    queries,
                }
            })
            .collect(),
    };
    let mut rows = Vec::new();
    for IndexData {
        label,
        dim,
        items,
        queries,
    } in data
    {
        let n = items.len() / dim;
        eprintln!(
            "{label}: {n} items of dimension {dim}, {} queries",
            queries.len() / dim
        );
        let ids: Vec<u64> = (0..n as u64).collect();
        // The factory strings the size-based default would pick, forced per row.
        let sized = |below: usize| IndexConfig {
            factory: None,
            flat_below: 0,
            ivf_flat_below: below,
            ..base.clone()
        };
        let ivf_flat = sized(usize::MAX).factory_for(n, dim);
        let ivf_pq = sized(0).factory_for(n, dim);
        let mut configs: Vec<(&str, String, usize)> = vec![
            ("flat", "IDMap2,Flat".into(), 1),
            ("ivf_flat", ivf_flat, 1),
            ("ivf_pq", ivf_pq.clone(), 1),
        ];
        for &f in &opts.rerank_factors {
            configs.push(("ivf_pq_rerank", ivf_pq.clone(), f));
        }
        let mut truth: Vec<HashSet<u64>> = Vec::new();
        let mut pq: Option<(ItemIndex, f64)> = None;
        for (name, factory, rerank) in configs {
            let cfg = IndexConfig {
                factory: Some(factory.clone()),
                rerank_factor: rerank,
                ..base.clone()
            };
            // The re-ranked IVF-PQ rows share the FAISS structure of plain IVF-PQ; only
            // the re-rank depth differs, so it is built once.
            let (index, build_s) = match &pq {
                Some((built, s)) if name == "ivf_pq_rerank" => {
                    (built.try_clone()?.with_rerank_factor(rerank), *s)
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
            let qps_batched = (queries.len() / dim) as f64 / started.elapsed().as_secs_f64();
            let faiss_bytes = index.faiss_bytes()?;
            let row = IndexRow {
                data: label.clone(),
                items: n,
                config: name.into(),
                factory,
                rerank_factor: rerank,
                build_s,
                memory_bytes: faiss_bytes + index.raw_bytes(),
                faiss_bytes,
                recall_at_10,
                qps_single: single,
                qps_single_2_threads: two,
                qps_batched,
            };
            let config = match name {
                "ivf_pq_rerank" => format!("{name} x{rerank}"),
                _ => name.to_owned(),
            };
            eprintln!(
                "  {config:<18} build {:>7.2}s  memory {:>6.1} MB (FAISS {:>6.1} MB)  recall@10 {:.4}  \
                 single {:>8.0}/s  2 threads {:>8.0}/s  batched {:>8.0}/s",
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
    let size = DeltaSize {
        dim: opts.dim,
        delta_base_items: opts.delta_base_items,
        delta_items: opts.delta_items,
        seed: opts.seed,
    };
    let delta_ms = delta(&size, &base).await?;
    Ok(IndexBenchReport {
        rows,
        delta_10k_searchable_ms: delta_ms,
        delta_base_items: opts.delta_base_items,
        delta_items: opts.delta_items,
    })
}
