//! `recsys bench index` and `recsys bench serve`.
//!
//! `bench index`: the item index on this machine, per configuration, on clustered
//! synthetic item vectors; and the time from publishing a 10k-item delta on the
//! `item-vectors` topic to it being searchable in a replica.
//!
//! Every number comes from running the real code path: `ItemIndex::build`, `search`,
//! `search_batch`, and for the delta the trainer's Kafka sink and the serving follower on
//! an embedded broker.

use std::collections::{HashMap, HashSet};
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
    let delta_ms = delta(&opts, &base).await?;
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
async fn delta(opts: &IndexBenchOptions, index_cfg: &IndexConfig) -> anyhow::Result<f64> {
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

    let catalog = Arc::new(CatalogHolder::new(1, index_cfg.clone()));
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

#[derive(Debug, Clone)]
pub struct ServeBenchOptions {
    pub users: usize,
    pub items: usize,
    pub dim: usize,
    /// Requests per second offered by the load generator, one run per rate.
    pub rates: Vec<u32>,
    pub seconds: u32,
    /// Connections each `oha` process keeps open.
    pub connections: u32,
    /// `oha` processes per run; 0: one per [`RATE_PER_GENERATOR`] offered.
    pub generators: u32,
    pub seed: u64,
    /// `ivf-pq` (the size-based IVF-PQ factory, re-ranked), `default` (what the catalog
    /// size picks), or a FAISS factory string.
    pub index: String,
    /// The headline run is the highest rate served in full within this p99.
    pub slo_p99_ms: f64,
    /// Passes over the rates (interleaved: every rate once, then again); each rate's
    /// figures are then the medians of its runs, which one noisy run cannot sway.
    pub repeat: u32,
    /// Recent items of every user, all excluded from their recommendations (a heavy
    /// user has up to `trainer.history_len`).
    pub history: usize,
}

impl Default for ServeBenchOptions {
    fn default() -> Self {
        Self {
            users: 100_000,
            items: 100_000,
            dim: 64,
            rates: vec![1_000, 5_000],
            seconds: 10,
            history: 5,
            connections: 8,
            generators: 0,
            seed: 7,
            index: "ivf-pq".into(),
            slo_p99_ms: 5.0,
            repeat: 1,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ServeRun {
    pub offered_rps: u32,
    /// `oha` processes that offered it.
    pub generators: u32,
    pub rps: f64,
    /// Percentiles of every request released in the run's measured window (its steady
    /// state, all processes together; see [`WARM_UP`]).
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// p99 of every logged request of the run, the generators' start-ups and ends
    /// included (the figures above are those of the measured window alone).
    pub whole_run_p99_ms: f64,
    /// Responses other than 200, and connection errors (not the requests oha cuts off
    /// when the run's time is up).
    pub errors: u64,
    /// The bare index search and the bare user-store lookup (the two calls a
    /// recommendation makes, each alone on an otherwise idle machine), measured just
    /// before this run; NaN for the `/healthz` floor, which makes neither.
    pub bare_search_p50_ms: f64,
    pub bare_redis_p50_ms: f64,
    /// `p50_ms` over (bare search p50 + bare Redis p50).
    pub overhead_ratio: f64,
    /// Where the machine's CPU went during the run (`None` where `/proc` is unreadable).
    pub cpu: Option<CpuUse>,
    /// The server's own time per request over the measured window, from its `/metrics`
    /// histogram (the middleware's clock, from the parsed request to its response): per
    /// bucket bound in ms, the share of the window's requests answered within it.
    /// Empty where `/metrics` could not be read.
    pub server_within_ms: Vec<(f64, f64)>,
    /// The same window's mean server time per request and of its two stages, from the
    /// histograms' sums and counts (`None` where `/metrics` could not be read).
    pub server_mean_ms: Option<ServerMeans>,
}

/// Mean times, ms, over a run's window, from the server's `/metrics`: a request in the
/// middleware, a user-store lookup, an index search (NaN where there were none).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ServerMeans {
    pub request: f64,
    pub store_lookup: f64,
    pub search: f64,
}

/// CPU used during a run, in cores (CPU seconds per second of wall time), read from
/// `/proc` at the two ends of the run's measured window.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuUse {
    /// This process: the server (the bench's own threads idle while a run lasts).
    pub server: f64,
    pub redis: f64,
    /// The `oha` processes together.
    pub generators: f64,
    /// Every process on the machine (`/proc/stat`), out of `cores`.
    pub machine: f64,
    pub cores: usize,
    /// Steal: cores this virtual machine wanted but its host gave to something else
    /// (`/proc/stat`; 0 on bare metal).
    pub stolen: f64,
    /// Time the same threads spent runnable but waiting for a core, in seconds per second
    /// of the run (`/proc/<pid>/task/*/schedstat`; `None` where the kernel keeps no
    /// scheduler statistics).
    pub waiting: Option<Waiting>,
}

/// Run-queue wait of the server's, redis-server's and the generators' threads, each in
/// seconds per second of the run: time threads that could run spent waiting for a core
/// (on a virtual machine, also for an idle virtual CPU to be woken). Summed over the
/// threads, so not all of it lies on any one request's path.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Waiting {
    pub server: f64,
    pub redis: f64,
    pub generators: f64,
}

/// CPU seconds so far of this process, redis-server, the load generators and the whole
/// machine.
struct CpuSample {
    at: Instant,
    own: f64,
    generators: f64,
    redis: f64,
    machine: f64,
    stolen: f64,
    /// Run-queue wait so far by thread, seconds: this process, redis, the generators.
    waited: Option<[HashMap<u32, f64>; 3]>,
}

/// The CPU split of a run as printed after its latencies.
/// `rps`: the run's throughput, to put the run-queue wait per request.
fn cpu_line(cpu: Option<&CpuUse>, rps: f64) -> String {
    cpu.map_or_else(String::new, |c| {
        let waiting = c.waiting.map_or_else(String::new, |w| {
            let per_request = |s: f64| s / rps * 1e6;
            format!(
                "\n           waiting for a core, per request: server {:.0} µs, redis {:.0} µs, \
                 oha {:.0} µs",
                per_request(w.server),
                per_request(w.redis),
                per_request(w.generators)
            )
        });
        format!(
            "\n           cores: server {:.2}, redis {:.2}, oha {:.2}; machine {:.2} of {}, \
             stolen by the host {:.2}{waiting}",
            c.server, c.redis, c.generators, c.machine, c.cores, c.stolen
        )
    })
}

/// Seconds each live thread of `pid` has spent runnable but not running, by thread id,
/// added to `into` (`/proc/<pid>/task/<tid>/schedstat`: on-CPU ns, run-queue ns, slices).
/// A thread that ends while it is read is left out.
fn proc_run_queue_waits(pid: &str, into: &mut HashMap<u32, f64>) -> Option<()> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let task = task.ok()?;
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        into.insert(
            tid,
            stat.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1e9,
        );
    }
    Some(())
}

/// Run-queue wait between two readings of the same threads: each thread's growth, a
/// thread born since counted whole. A thread that ended in between is left out (its
/// wait is lost, never subtracted), as sums over whatever threads live would not.
fn waited_since(before: &HashMap<u32, f64>, now: &HashMap<u32, f64>) -> f64 {
    now.iter()
        .map(|(tid, w)| w - before.get(tid).copied().unwrap_or(0.0))
        .sum()
}

/// Clock ticks of `/proc`: `USER_HZ`, 100 on Linux whatever the kernel's own tick.
const USER_HZ: f64 = 100.0;

/// `utime + stime` of `pid` in seconds, from `/proc/<pid>/stat`.
fn proc_cpu(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces:
    // the first is field 3 (state), so utime (14) is at 11.
    let fields: Vec<f64> = stat
        .get(stat.rfind(')')? + 2..)?
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let [utime, stime] = fields[..] else {
        return None;
    };
    Some((utime + stime) / USER_HZ)
}

impl CpuSample {
    /// `generators`: the load generators' pids, read while they run (after the load,
    /// oha goes on to write its request log, which is not the run's CPU).
    fn take(redis_pid: u32, generators: &[u32]) -> Option<Self> {
        let own = proc_cpu("self")?;
        let redis = proc_cpu(&redis_pid.to_string())?;
        let generators_cpu = generators
            .iter()
            .map(|pid| proc_cpu(&pid.to_string()))
            .sum::<Option<f64>>()?;
        let waited = (|| {
            let mut by_thread: [HashMap<u32, f64>; 3] = Default::default();
            proc_run_queue_waits("self", &mut by_thread[0])?;
            proc_run_queue_waits(&redis_pid.to_string(), &mut by_thread[1])?;
            for pid in generators {
                proc_run_queue_waits(&pid.to_string(), &mut by_thread[2])?;
            }
            Some(by_thread)
        })();
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        // cpu  user nice system idle iowait irq softirq steal ...: busy is all but idle,
        // iowait and steal.
        let ticks: Vec<f64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|t| t.parse().ok())
            .collect();
        let machine = ticks
            .iter()
            .enumerate()
            .filter(|(i, _)| ![3, 4, 7].contains(i))
            .map(|(_, t)| t)
            .sum::<f64>()
            / USER_HZ;
        let stolen = ticks.get(7).copied().unwrap_or(0.0) / USER_HZ;
        Some(Self {
            at: Instant::now(),
            own,
            generators: generators_cpu,
            redis,
            machine,
            stolen,
            waited,
        })
    }

    /// Cores used since `self`, with `generators` as [`CpuSample::take`] has them.
    fn cores_since(&self, redis_pid: u32, generators: &[u32]) -> Option<CpuUse> {
        let now = Self::take(redis_pid, generators)?;
        let secs = now.at.duration_since(self.at).as_secs_f64();
        Some(CpuUse {
            server: (now.own - self.own) / secs,
            redis: (now.redis - self.redis) / secs,
            generators: (now.generators - self.generators) / secs,
            machine: (now.machine - self.machine) / secs,
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            stolen: (now.stolen - self.stolen) / secs,
            waiting: self
                .waited
                .as_ref()
                .zip(now.waited.as_ref())
                .map(|(a, b)| Waiting {
                    server: waited_since(&a[0], &b[0]) / secs,
                    redis: waited_since(&a[1], &b[1]) / secs,
                    generators: waited_since(&a[2], &b[2]) / secs,
                }),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ServeBenchReport {
    pub users: usize,
    pub items: usize,
    pub factory: String,
    /// Every run, in the order made.
    pub runs: Vec<ServeRun>,
    /// Passes over the rates.
    pub repeat: u32,
    /// Per rate, the medians of its runs; the headline is chosen among these.
    pub medians: Vec<ServeRun>,
    /// The headline: among the per-rate medians, the highest offered rate served in full
    /// (at least 95% of it, under 0.1% errors) with p99 within `slo_p99_ms`; else the
    /// first rate given.
    pub slo_p99_ms: f64,
    /// Whether any rate met that bar (false: the headline is the first rate, unmet).
    pub slo_met: bool,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub errors: u64,
    /// The headline rate's medians of its runs' bare search and bare lookup p50s, each
    /// run's measured just before it.
    pub bare_search_p50_ms: f64,
    pub bare_redis_p50_ms: f64,
    /// HTTP p50 over (bare search p50 + bare Redis p50): the median of the headline
    /// rate's runs' ratios, each against the bare sum measured just before the run.
    pub overhead_ratio: f64,
    /// `GET /healthz` (no work) at the highest offered rate: the floor of the HTTP
    /// exchange and the load generator sharing the machine.
    pub healthz: Option<ServeRun>,
    /// The serving targets, judged at [`TARGET_RPS`] when it was among the rates. The
    /// headline above is a different question (the most a run sustained within the p99
    /// bound), so its ratio may be a higher rate's.
    pub targets: Option<Targets>,
}

/// Offered rate at which the serving targets are judged.
pub const TARGET_RPS: u32 = 5_000;
/// The HTTP p50 may be at most this many times the bare search + bare lookup p50s.
pub const TARGET_OVERHEAD: f64 = 3.0;

/// The serving targets at [`TARGET_RPS`]: served in full with p99 within `slo_p99_ms`,
/// and the HTTP p50 within [`TARGET_OVERHEAD`]× the bare sum; on the medians of that
/// rate's runs, and run by run.
#[derive(Debug, Clone, Serialize)]
pub struct Targets {
    pub offered_rps: u32,
    pub p99_ms: f64,
    pub p99_met: bool,
    pub overhead_ratio: f64,
    pub overhead_met: bool,
    /// Runs at the rate that met both on their own figures.
    pub runs_meeting_both: usize,
    pub runs: usize,
}

/// Samples of each bare measurement.
const BARE_SAMPLES: usize = 2_000;

/// p50s, ms, of the two calls a personal recommendation makes, each timed alone.
#[derive(Debug, Clone, Copy)]
struct Bare {
    search_ms: f64,
    redis_ms: f64,
}

/// The bare costs, on the calling thread set up as an HTTP worker is (a single-threaded
/// event loop, one-thread FAISS searches): the user-store lookup serving does (vector +
/// history, one round trip) and the index search it does (k = 10, the user's history
/// excluded), [`BARE_SAMPLES`] of each, alternating, for users from `first_user` on
/// (spread over the `users`).
fn bare_costs(
    store: &dyn recsys_serving::UserVectorStore,
    catalog: &recsys_serving::Catalog,
    vectors: &[f32],
    dim: usize,
    users: usize,
    first_user: usize,
) -> anyhow::Result<Bare> {
    recsys_engine::index::single_threaded_searches();
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

/// The upper median (NaN for none): for an even count, the higher of the two middle
/// values, where [`nearest_rank`] takes the lower; so the median p99 of `--repeat 2`
/// is the worse run's.
fn p50(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Offered requests per second one `oha` process releases evenly. oha paces with tokio's
/// timer, which ticks every millisecond: above 1,000 req/s one process releases
/// `rate / 1000` requests at once on every tick, a synchronised burst a fixed rate does
/// not mean. At 5,000 req/s, `bench serve --generators 1` then `--generators 0`, two runs
/// each: one process HTTP p50 0.94 and 0.88 ms (p99 6.0, 4.0), five processes at 1,000
/// each 0.72 and 0.53 ms (p99 2.6, 2.1; the highest of the five each time).
pub const RATE_PER_GENERATOR: u32 = 1_000;

/// Runtime threads of each `oha` process (its default is one per core). Five processes of
/// two threads each at 5,000 req/s queued on the two cores behind one another: in an
/// alternated A/B (8 runs each, `bench serve --rate 5000 --repeat 2`), one thread each
/// cut oha's CPU from 0.45–0.52 to 0.38–0.45 cores and its threads' run-queue wait from
/// 222–416 to 63–116 µs per request; the HTTP p50 stayed where it was (0.57–1.03 ms
/// against 0.53–0.92). 1,000 req/s over 8 connections is light work for one thread.
const GENERATOR_THREADS: u32 = 1;

/// Pause between starting two `oha` processes of one run. Started together, their
/// start-ups (runtimes, 8 connections each) stalled the first requests of every process
/// by 110–160 ms (p99 over 100 ms); 200 ms apart, each starts while the others run.
const GENERATOR_STAGGER: Duration = Duration::from_millis(200);

/// `rate` requests per second against `target` (oha's arguments naming the URLs: one URL,
/// or `--urls-from-file <file>`) for `seconds` at full rate, from
/// `generators` `oha` processes (crates.io: `cargo install oha`) of `rate / generators`
/// each (0: one per [`RATE_PER_GENERATOR`]) over `connections` connections each, started
/// [`GENERATOR_STAGGER`] apart; all of them run on together at the full rate for
/// [`WARM_UP`], the measured `seconds` and [`COOL_DOWN`], and stop together.
///
/// The run's figures are those of the measured window, the whole rate's steady state:
/// its percentiles over every request released in it, all processes' together (from the
/// request log each writes, `--db-url`), its throughput the requests answered of those,
/// its CPU split read at the window's two ends. Errors are counted over the whole run
/// (from the processes' JSON summaries). The percentiles of every logged request, ramp
/// and ends included, are kept as `whole_run_p99_ms`.
fn load(
    target: &[String],
    rate: u32,
    seconds: u32,
    connections: u32,
    generators: u32,
    redis_pid: u32,
    server: std::net::SocketAddr,
) -> anyhow::Result<ServeRun> {
    let generators = if generators == 0 {
        rate.div_ceil(RATE_PER_GENERATOR)
    } else {
        generators
    }
    .clamp(1, rate.max(1));
    let logs = tempfile::tempdir().context("a directory for oha's request logs")?;
    let log = |g: u32| logs.path().join(format!("oha-{g}.db"));
    let stagger = GENERATOR_STAGGER.as_secs_f64();
    let (warm_up, cool_down) = (WARM_UP.as_secs_f64(), COOL_DOWN.as_secs_f64());
    let measured = f64::from(seconds);
    // How long process `g` offers load: until the last one has run the whole window.
    let duration =
        |g: u32| warm_up + measured + cool_down + f64::from(generators - 1 - g) * stagger;
    let mut children = Generators(Vec::new());
    let mut last_started = Instant::now();
    for g in 0..generators {
        if g > 0 {
            std::thread::sleep(GENERATOR_STAGGER);
        }
        // Split the rate as evenly as integers allow.
        let share = rate / generators + u32::from(g < rate % generators);
        last_started = Instant::now();
        let child = std::process::Command::new("oha")
            .args([
                "-z",
                &format!("{:.2}s", duration(g)),
                "-q",
                &share.to_string(),
                "-c",
                &connections.to_string(),
                "--no-tui",
                "--worker-threads",
                &GENERATOR_THREADS.to_string(),
                // Latency from each request's release, not its actual send: no
                // coordinated omission when the server falls behind.
                "--latency-correction",
                "--output-format",
                "json",
            ])
            .arg("--db-url")
            .arg(log(g))
            .args(target)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running oha (install it with `cargo install oha`)")?;
        children.0.push(child);
    }
    // Where the CPU went, read at the measured window's two ends.
    let sleep_until =
        |at: Instant| std::thread::sleep(at.saturating_duration_since(Instant::now()));
    let pids: Vec<u32> = children.0.iter().map(std::process::Child::id).collect();
    sleep_until(last_started + WARM_UP);
    let before = CpuSample::take(redis_pid, &pids);
    let server_before = ServerTimes::read(server);
    sleep_until(last_started + WARM_UP + Duration::from_secs(seconds.into()));
    let cpu = before.and_then(|b| b.cores_since(redis_pid, &pids));
    let server_between = server_before.zip(ServerTimes::read(server));
    let server_within_ms = server_between
        .as_ref()
        .map_or_else(Vec::new, |(before, after)| {
            shares_within(&before.request_buckets, &after.request_buckets)
        });
    let server_mean_ms = server_between.map(|(before, after)| after.means_since(&before));
    let mut errors = 0;
    while !children.0.is_empty() {
        let child = children.0.remove(0);
        let out = child.wait_with_output().context("waiting for oha")?;
        if !out.status.success() {
            bail!("oha failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        errors += oha_errors(&out.stdout)?;
    }
    let requests = (0..generators)
        .map(|g| request_log(&log(g)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let window_ends: Vec<f64> = (0..generators).map(|g| duration(g) - cool_down).collect();
    let (window, whole) = window_latencies(&requests, &window_ends, measured);
    Ok(ServeRun {
        offered_rps: rate,
        generators,
        rps: window.len() as f64 / measured,
        p50_ms: nearest_rank(&window, 500),
        p99_ms: nearest_rank(&window, 990),
        p999_ms: nearest_rank(&window, 999),
        whole_run_p99_ms: nearest_rank(&whole, 990),
        errors,
        bare_search_p50_ms: f64::NAN,
        bare_redis_p50_ms: f64::NAN,
        overhead_ratio: f64::NAN,
        cpu,
        server_within_ms,
        server_mean_ms,
    })
}

/// Latencies, ms, sorted, of the requests of a run's processes (`requests[g]`, as
/// [`request_log`] reads them): those released in the measured window, the `measured`
/// seconds before `window_ends[g]` on process g's clock (each clock starts with its
/// process's load, and the processes end together), and all of them.
fn window_latencies(
    requests: &[Vec<(f64, f64)>],
    window_ends: &[f64],
    measured: f64,
) -> (Vec<f64>, Vec<f64>) {
    let (mut window, mut whole) = (Vec::new(), Vec::new());
    for (process, &end) in requests.iter().zip(window_ends) {
        for &(released, ms) in process {
            if (end - measured..end).contains(&released) {
                window.push(ms);
            }
            whole.push(ms);
        }
    }
    window.sort_by(f64::total_cmp);
    whole.sort_by(f64::total_cmp);
    (window, whole)
}

/// What the server's `/metrics` says so far of its own time: the request-latency
/// buckets, every route's and status's summed except `/metrics`'s own, and (sum of
/// seconds, count) of requests, user-store lookups and index searches.
struct ServerTimes {
    request_buckets: Vec<(f64, u64)>,
    request: (f64, u64),
    store_lookup: (f64, u64),
    search: (f64, u64),
}

impl ServerTimes {
    /// `None` if `/metrics` cannot be read.
    fn read(server: std::net::SocketAddr) -> Option<Self> {
        let response = crate::http::HttpClient::connect(server)
            .ok()?
            .get("/metrics")
            .ok()?;
        (response.status == 200).then(|| Self::parse(&String::from_utf8_lossy(&response.body)))
    }

    fn parse(text: &str) -> Self {
        Self {
            request_buckets: latency_buckets(text),
            request: sum_and_count(text, "recsys_http_request_duration_seconds"),
            store_lookup: sum_and_count(text, "recsys_store_lookup_duration_seconds"),
            search: sum_and_count(text, "recsys_search_duration_seconds"),
        }
    }

    /// Mean ms of each between `before` and `self`.
    fn means_since(&self, before: &Self) -> ServerMeans {
        let mean = |(s1, n1): (f64, u64), (s0, n0): (f64, u64)| {
            (s1 - s0) * 1e3 / n1.saturating_sub(n0) as f64
        };
        ServerMeans {
            request: mean(self.request, before.request),
            store_lookup: mean(self.store_lookup, before.store_lookup),
            search: mean(self.search, before.search),
        }
    }
}

/// `(labels, value)` of each line `name{labels} value` or `name value` of an exposition
/// text, leaving out the series of `/metrics`'s own route.
fn series<'t>(text: &'t str, name: &str) -> impl Iterator<Item = (&'t str, &'t str)> {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(labelled) => labelled.rsplit_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        (!labels.contains("route=\"/metrics\"")).then_some((labels, value.trim()))
    })
}

/// (Sum, count) of histogram `name` over its series (see [`series`]).
fn sum_and_count(text: &str, name: &str) -> (f64, u64) {
    let sum = series(text, &format!("{name}_sum"))
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum();
    let count = series(text, &format!("{name}_count"))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum();
    (sum, count)
}

/// The request-latency buckets of an exposition text (see [`ServerTimes`]): per bound
/// (seconds; `+Inf` as infinity), the requests within it, ascending by bound.
fn latency_buckets(text: &str) -> Vec<(f64, u64)> {
    let mut by_bound: std::collections::BTreeMap<u64, u64> = Default::default();
    for (labels, count) in series(text, "recsys_http_request_duration_seconds_bucket") {
        let Some(le) = labels
            .split("le=\"")
            .nth(1)
            .and_then(|l| l.strip_suffix('"'))
        else {
            continue;
        };
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::NAN)
        };
        if let (false, Ok(count)) = (bound.is_nan(), count.parse::<u64>()) {
            *by_bound.entry(bound.to_bits()).or_default() += count;
        }
    }
    // Positive floats order as their bits do.
    by_bound
        .into_iter()
        .map(|(bits, n)| (f64::from_bits(bits), n))
        .collect()
}

/// Between two [`latency_buckets`] readings: per finite bound in ms, the share of the
/// requests answered in between that took at most that long (none if none were).
fn shares_within(before: &[(f64, u64)], after: &[(f64, u64)]) -> Vec<(f64, f64)> {
    let count = |buckets: &[(f64, u64)], bound: f64| {
        buckets
            .iter()
            .find(|(b, _)| *b == bound)
            .map_or(0, |(_, n)| *n)
    };
    let total = count(after, f64::INFINITY).saturating_sub(count(before, f64::INFINITY));
    if total == 0 {
        return Vec::new();
    }
    after
        .iter()
        .filter(|(bound, _)| bound.is_finite())
        .map(|&(bound, n)| {
            let within = n.saturating_sub(count(before, bound));
            (bound * 1e3, within as f64 / total as f64)
        })
        .collect()
}

/// The printed part of [`ServeRun::server_within_ms`] (the bounds around the p50 and
/// the p99 target) and of [`ServeRun::server_mean_ms`].
fn server_time_line(within: &[(f64, f64)], means: Option<&ServerMeans>) -> String {
    let shown: Vec<String> = within
        .iter()
        .filter(|(ms, _)| [0.5, 1.0, 2.5, 5.0].iter().any(|b| (b - ms).abs() < 1e-9))
        .map(|(ms, share)| format!("≤ {ms} ms {:.1}%", share * 100.0))
        .collect();
    let mut line = String::new();
    if !shown.is_empty() {
        line += &format!(
            "\n           server's own time (/metrics): {}",
            shown.join(", ")
        );
    }
    if let Some(m) = means.filter(|m| m.request.is_finite()) {
        line += &format!(
            "\n           server's mean per request: {:.3} ms",
            m.request
        );
        if m.store_lookup.is_finite() || m.search.is_finite() {
            line += &format!(
                ", of which user-store lookup {:.3} ms, index search {:.3} ms",
                m.store_lookup, m.search
            );
        }
    }
    line
}

/// Full-rate lead-in before a run's measured window. The last `oha` to start reads the
/// list of 100,000 URLs and opens its connections on the cores the others are loading:
/// in two runs at 5,000 req/s, 16% of the requests released within 125 ms of the last
/// start were slower than the run's p99, against at most 4% in any later quarter-second.
const WARM_UP: Duration = Duration::from_millis(500);

/// Full-rate tail after the measured window: the processes stop within some tens of ms
/// of one another, and the first to stop writes its request log while the others still
/// send (in the same two runs, 13% of the requests released in the last 125 ms were
/// slower than the run's p99).
const COOL_DOWN: Duration = Duration::from_millis(250);

/// The requests one `oha` process answered, from its request log (`--db-url`, an SQLite
/// table `oha` with one row per answered request): when each was released, seconds on
/// the process's clock (with `--latency-correction`, its scheduled release), and its
/// latency in ms (`duration`, which then runs from that release).
fn request_log(path: &std::path::Path) -> anyhow::Result<Vec<(f64, f64)>> {
    let db =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("oha's request log {}", path.display()))?;
    let mut query = db
        .prepare("SELECT COALESCE(start_latency_correction, start), duration FROM oha")
        .with_context(|| format!("oha's request log {}", path.display()))?;
    let rows = query.query_map([], |row| {
        Ok((row.get::<_, f64>(0)?, row.get::<_, f64>(1)? * 1e3))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The value at `per_mille`/1000 of `sorted` by nearest rank: the smallest with at least
/// that share of all the values at or below it (NaN for none).
fn nearest_rank(sorted: &[f64], per_mille: usize) -> f64 {
    let rank = (sorted.len() * per_mille).div_ceil(1000).max(1);
    sorted.get(rank - 1).copied().unwrap_or(f64::NAN)
}

/// The `oha` processes of one run; those still running when it is dropped (a run that
/// failed half-way) are killed rather than left loading the next run.
struct Generators(Vec<std::process::Child>);

impl Drop for Generators {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The errors of one `oha --output-format json` summary: answers other than 200, and
/// connection errors. (Latencies come from the request logs, throughput from the window.)
fn oha_errors(json: &[u8]) -> anyhow::Result<u64> {
    let v: serde_json::Value = serde_json::from_slice(json).context("oha's JSON summary")?;
    let codes = v["statusCodeDistribution"].as_object();
    let ok = codes
        .and_then(|c| c.get("200"))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let all: u64 = codes
        .map(|c| c.values().filter_map(serde_json::Value::as_u64).sum())
        .unwrap_or(0);
    // Requests still in flight when the run's time is up are cut off by oha itself
    // ("aborted due to deadline"): not the server's errors.
    let conn_errors: u64 = v["errorDistribution"]
        .as_object()
        .map(|e| {
            e.iter()
                .filter(|(kind, _)| !kind.contains("aborted due to deadline"))
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
        .unwrap_or(0);
    if conn_errors > 0 || all > ok {
        eprintln!(
            "  non-200 answers {:?}, errors {}",
            v["statusCodeDistribution"], v["errorDistribution"]
        );
    }
    Ok(all - ok + conn_errors)
}

/// The HTTP API under load: a real redis-server holding every user's vector and a short
/// history, an IVF-PQ catalog, the server as `recsys serve` builds it, and `oha` on the
/// same machine offering fixed rates. In the same run, the bare index search and the bare
/// user-store lookup, so the serving overhead shows as a ratio.
/// `serving` is the effective `[serving]` configuration (workers, search threads, ...);
/// its address and API keys are replaced by a loopback port and no keys. `index` is the
/// effective `[index]` one (nprobe, re-rank depth), its factory chosen by `opts.index`.
pub async fn serve(
    opts: ServeBenchOptions,
    serving: recsys_serving::ServingConfig,
    index: IndexConfig,
) -> anyhow::Result<ServeBenchReport> {
    use recsys_serving::{AppState, FollowStatus, RedisUserVectorStore, ServingConfig};
    use recsys_trainer::sink::{RedisUserVectorSink, UserUpdate, UserVectorSink};

    anyhow::ensure!(
        !opts.rates.is_empty() && opts.rates.iter().all(|&r| r > 0),
        "--rate: give one or more rates above 0, got {:?}",
        opts.rates
    );
    anyhow::ensure!(
        opts.history <= 500 && opts.history < opts.items,
        "--history: at most 500 (the recent items serving reads) and fewer than --items, got {}",
        opts.history
    );
    let dim = opts.dim;
    let redis = crate::redis_server::RedisServer::start();
    let redis_pid = redis.pid();
    let (items, users) = clustered(opts.items, opts.users, dim, opts.seed);
    let factory = match opts.index.as_str() {
        "ivf-pq" => IndexConfig {
            factory: None,
            flat_below: 0,
            ivf_flat_below: 0,
            ..index.clone()
        }
        .factory_for(opts.items, dim),
        "default" => index.factory_for(opts.items, dim),
        other => other.to_owned(),
    };
    let catalog = Arc::new(CatalogHolder::new(
        1,
        IndexConfig {
            factory: Some(factory.clone()),
            ..index.clone()
        },
    ));
    eprintln!("building {factory} over {} items", opts.items);
    let batch: Vec<(String, Vec<f32>)> = (0..opts.items)
        .map(|i| (format!("i{i}"), items[i * dim..(i + 1) * dim].to_vec()))
        .collect();
    tokio::task::block_in_place(|| catalog.apply_items(1, batch))?;
    catalog.set_popular(1, (0..100).map(|i| (format!("i{i}"), 1.0)).collect())?;

    eprintln!("writing {} user vectors to redis-server", opts.users);
    let writer = RedisUserVectorSink::connect(&redis.url(), 3600, 500).await?;
    let updates: Vec<UserUpdate> = (0..opts.users)
        .map(|u| UserUpdate {
            user_id: format!("u{u}"),
            vector: users[u * dim..(u + 1) * dim].to_vec(),
            new_items: (0..opts.history)
                .map(|j| format!("i{}", (u * 7 + j) % opts.items))
                .collect(),
        })
        .collect();
    for chunk in updates.chunks(10_000) {
        writer.publish(1, chunk).await?;
    }

    let store =
        Arc::new(RedisUserVectorStore::connect(&redis.url(), Duration::from_millis(50)).await?);
    let snapshot = catalog.load();
    let (users, bare_store) = (Arc::new(users), store.clone());
    let bare = |pass: u32| {
        let (store, snapshot, users) = (bare_store.clone(), snapshot.clone(), users.clone());
        let first_user = (pass as usize * BARE_SAMPLES) % opts.users;
        let thread = std::thread::spawn(move || {
            bare_costs(&*store, &snapshot, &users, dim, opts.users, first_user)
        });
        tokio::task::block_in_place(|| thread.join())
            .map_err(|_| anyhow::anyhow!("bare measurement panicked"))?
    };
    let first = bare(0)?;
    eprintln!(
        "bare index search p50 {:.3} ms, bare redis lookup p50 {:.3} ms (measured again \
         before every run)",
        first.search_ms, first.redis_ms
    );

    let follow = Arc::new(FollowStatus::default());
    follow.set_ready();
    let cfg = ServingConfig {
        bind: "127.0.0.1:0".into(),
        auth: Default::default(),
        ..serving
    };
    eprintln!(
        "server: {} HTTP workers (0 = one per core), searches {}",
        cfg.workers,
        match cfg.search_threads {
            0 => "inline on the workers".to_owned(),
            n => format!("on a pool of {n} threads"),
        }
    );
    let state = AppState::new(catalog.clone(), store, cfg, follow)?;
    let (server, addr) = recsys_serving::start(state)?;
    let handle = server.handle();
    tokio::spawn(server);
    // Every user once, oha picking one at random per request: each user as likely as any
    // other. (A `u[0-9]{1,5}` regex, as used before, sent 20% of the requests to ten
    // users, and 8% to ids with leading zeros that no user has.)
    let mut urls = tempfile::NamedTempFile::new().context("the URL list")?;
    {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(urls.as_file_mut());
        for u in 0..opts.users {
            writeln!(w, "http://{addr}/v1/users/u{u}/recommendations?k=10")?;
        }
        w.flush()?;
    }
    let url = vec![
        "--urls-from-file".to_owned(),
        urls.path().display().to_string(),
    ];
    let mut runs = Vec::new();
    let passes = opts.repeat.max(1);
    for (pass, &rate) in (1..=passes).flat_map(|p| opts.rates.iter().map(move |r| (p, r))) {
        eprintln!(
            "offering {rate} requests/s for {} s (pass {pass} of {passes})",
            opts.seconds
        );
        let (url, seconds, conns, gens) =
            (url.clone(), opts.seconds, opts.connections, opts.generators);
        // The run's own denominator, taken on the idle machine just before its load: the
        // host's speed drifts over minutes (bare sums of 0.185–0.262 ms in one day).
        let bare = if runs.is_empty() {
            first
        } else {
            bare(u32::try_from(runs.len()).unwrap_or(u32::MAX))?
        };
        let mut run = tokio::task::spawn_blocking(move || {
            load(&url, rate, seconds, conns, gens, redis_pid, addr)
        })
        .await??;
        run.bare_search_p50_ms = bare.search_ms;
        run.bare_redis_p50_ms = bare.redis_ms;
        run.overhead_ratio = run.p50_ms / (bare.search_ms + bare.redis_ms);
        eprintln!(
            "  {:>6} offered ({} oha): {:>8.0} req/s  p50 {:.3} ms  p99 {:.3} ms  \
             p99.9 {:.3} ms  errors {}  p50/bare {:.2}  (whole run: p99 {:.3} ms)\n\
             {:>11}bare just before: search {:.3} ms + redis {:.3} ms{}{}",
            run.offered_rps,
            run.generators,
            run.rps,
            run.p50_ms,
            run.p99_ms,
            run.p999_ms,
            run.errors,
            run.overhead_ratio,
            run.whole_run_p99_ms,
            "",
            bare.search_ms,
            bare.redis_ms,
            cpu_line(run.cpu.as_ref(), run.rps),
            server_time_line(&run.server_within_ms, run.server_mean_ms.as_ref()),
        );
        runs.push(run);
    }
    // The floor: the same load on `GET /healthz`, which does no work, shows what the HTTP
    // exchange and the load generator cost at the highest rate on this machine.
    let floor = match opts.rates.iter().max() {
        Some(&rate) => {
            let (url, seconds, conns, gens) = (
                vec![format!("http://{addr}/healthz")],
                opts.seconds,
                opts.connections,
                opts.generators,
            );
            eprintln!("offering {rate} requests/s to /healthz for {seconds} s");
            let run = tokio::task::spawn_blocking(move || {
                load(&url, rate, seconds, conns, gens, redis_pid, addr)
            })
            .await??;
            eprintln!(
                "  /healthz at {rate}: p50 {:.3} ms  p99 {:.3} ms (HTTP and load-generator \
                 floor){}{}",
                run.p50_ms,
                run.p99_ms,
                cpu_line(run.cpu.as_ref(), run.rps),
                server_time_line(&run.server_within_ms, run.server_mean_ms.as_ref()),
            );
            Some(run)
        }
        None => None,
    };
    handle.stop(true).await;
    let sustained = |r: &&ServeRun| {
        r.rps >= 0.95 * f64::from(r.offered_rps)
            && (r.errors as f64) < 0.001 * r.rps * f64::from(opts.seconds)
            && r.p99_ms <= opts.slo_p99_ms
    };
    // One row per rate: the medians of its runs (the run itself when there is one).
    let medians: Vec<ServeRun> = opts
        .rates
        .iter()
        .map(|&rate| {
            let of_rate: Vec<&ServeRun> = runs.iter().filter(|r| r.offered_rps == rate).collect();
            let median = |f: fn(&ServeRun) -> f64| p50(of_rate.iter().map(|r| f(r)).collect());
            ServeRun {
                offered_rps: rate,
                generators: of_rate.first().map_or(1, |r| r.generators),
                rps: median(|r| r.rps),
                p50_ms: median(|r| r.p50_ms),
                p99_ms: median(|r| r.p99_ms),
                p999_ms: median(|r| r.p999_ms),
                whole_run_p99_ms: median(|r| r.whole_run_p99_ms),
                errors: of_rate.iter().map(|r| r.errors).max().unwrap_or(0),
                bare_search_p50_ms: median(|r| r.bare_search_p50_ms),
                bare_redis_p50_ms: median(|r| r.bare_redis_p50_ms),
                overhead_ratio: median(|r| r.overhead_ratio),
                cpu: {
                    let cpus: Vec<CpuUse> = of_rate.iter().filter_map(|r| r.cpu).collect();
                    let median = |f: fn(&CpuUse) -> f64| p50(cpus.iter().map(f).collect());
                    cpus.first().map(|c| CpuUse {
                        server: median(|c| c.server),
                        redis: median(|c| c.redis),
                        generators: median(|c| c.generators),
                        machine: median(|c| c.machine),
                        cores: c.cores,
                        stolen: median(|c| c.stolen),
                        waiting: {
                            let waits: Vec<Waiting> =
                                cpus.iter().filter_map(|c| c.waiting).collect();
                            let median =
                                |f: fn(&Waiting) -> f64| p50(waits.iter().map(f).collect());
                            (!waits.is_empty()).then(|| Waiting {
                                server: median(|w| w.server),
                                redis: median(|w| w.redis),
                                generators: median(|w| w.generators),
                            })
                        },
                    })
                },
                // Per bound, the median share (runs whose `/metrics` was read alike).
                server_within_ms: of_rate
                    .first()
                    .map_or(&[][..], |r| &r.server_within_ms[..])
                    .iter()
                    .enumerate()
                    .map(|(i, &(ms, _))| {
                        let shares = of_rate
                            .iter()
                            .filter_map(|r| r.server_within_ms.get(i).map(|&(_, s)| s))
                            .collect();
                        (ms, p50(shares))
                    })
                    .collect(),
                server_mean_ms: {
                    let means: Vec<ServerMeans> =
                        of_rate.iter().filter_map(|r| r.server_mean_ms).collect();
                    let median = |f: fn(&ServerMeans) -> f64| p50(means.iter().map(f).collect());
                    (!means.is_empty()).then(|| ServerMeans {
                        request: median(|m| m.request),
                        store_lookup: median(|m| m.store_lookup),
                        search: median(|m| m.search),
                    })
                },
            }
        })
        .collect();
    if passes > 1 {
        eprintln!("medians of {passes} runs per rate:");
        for m in &medians {
            eprintln!(
                "  {:>6} offered: {:>8.0} req/s  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  \
                 errors (most) {}  p50/bare {:.2}{}{}",
                m.offered_rps,
                m.rps,
                m.p50_ms,
                m.p99_ms,
                m.p999_ms,
                m.errors,
                m.overhead_ratio,
                cpu_line(m.cpu.as_ref(), m.rps),
                server_time_line(&m.server_within_ms, m.server_mean_ms.as_ref()),
            );
        }
    }
    let best = medians
        .iter()
        .filter(sustained)
        .max_by_key(|r| r.offered_rps);
    let which = if best.is_some() {
        format!("the highest rate served within p99 {} ms", opts.slo_p99_ms)
    } else {
        format!(
            "no rate was served within p99 {} ms; the first rate",
            opts.slo_p99_ms
        )
    };
    let last = best.or(medians.first()).cloned().context("no rate given")?;
    eprintln!(
        "bare index search p50 {:.3} ms, bare redis lookup p50 {:.3} ms; at {} req/s \
         offered ({which}) HTTP p50 is {:.2}x their sum{}",
        last.bare_search_p50_ms,
        last.bare_redis_p50_ms,
        last.offered_rps,
        last.overhead_ratio,
        if passes > 1 {
            " (medians over the runs, each run's ratio against the bare sum taken before it)"
        } else {
            ""
        }
    );
    let targets = medians
        .iter()
        .find(|m| m.offered_rps == TARGET_RPS)
        .map(|m| {
            let of_rate: Vec<&ServeRun> = runs
                .iter()
                .filter(|r| r.offered_rps == TARGET_RPS)
                .collect();
            let targets = Targets {
                offered_rps: TARGET_RPS,
                p99_ms: m.p99_ms,
                p99_met: sustained(&m),
                overhead_ratio: m.overhead_ratio,
                overhead_met: m.overhead_ratio <= TARGET_OVERHEAD,
                runs_meeting_both: of_rate
                    .iter()
                    .filter(|r| sustained(r) && r.overhead_ratio <= TARGET_OVERHEAD)
                    .count(),
                runs: of_rate.len(),
            };
            let met = |ok: bool| if ok { "met" } else { "missed" };
            eprintln!(
                "targets at {TARGET_RPS} req/s{}: served in full with p99 {:.3} ms <= {} ms: \
                 {}; HTTP p50 {:.2}x the bare sum <= {TARGET_OVERHEAD}: {}; runs meeting \
                 both: {} of {}",
                if passes > 1 { " (medians)" } else { "" },
                targets.p99_ms,
                opts.slo_p99_ms,
                met(targets.p99_met),
                targets.overhead_ratio,
                met(targets.overhead_met),
                targets.runs_meeting_both,
                targets.runs,
            );
            targets
        });
    Ok(ServeBenchReport {
        users: opts.users,
        items: opts.items,
        factory,
        slo_p99_ms: opts.slo_p99_ms,
        slo_met: best.is_some(),
        rps: last.rps,
        p50_ms: last.p50_ms,
        p99_ms: last.p99_ms,
        p999_ms: last.p999_ms,
        errors: last.errors,
        bare_search_p50_ms: last.bare_search_p50_ms,
        bare_redis_p50_ms: last.bare_redis_p50_ms,
        overhead_ratio: last.overhead_ratio,
        healthz: floor,
        targets,
        repeat: passes,
        medians,
        runs,
    })
}

#[derive(Debug, Clone)]
pub struct TrainBenchOptions {
    pub users: usize,
    pub items: usize,
    pub events: usize,
    pub dim: usize,
    pub batch: usize,
    /// Users in the memory measurement.
    pub memory_users: usize,
    pub seed: u64,
    pub backend: recsys_engine::device::Backend,
    /// The PyTorch peer script; `None` skips it.
    pub torch_script: Option<std::path::PathBuf>,
}

/// Where the PyTorch peer lives in the source tree.
pub fn default_torch_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/torch_mf.py")
}

impl Default for TrainBenchOptions {
    fn default() -> Self {
        Self {
            users: 100_000,
            items: 100_000,
            events: 500_000,
            dim: 64,
            batch: 1024,
            memory_users: 1_000_000,
            seed: 13,
            backend: recsys_engine::device::Backend::Cpu,
            torch_script: Some(default_torch_script()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainBenchReport {
    pub backend: recsys_engine::device::Backend,
    pub users: usize,
    pub items: usize,
    pub events: usize,
    pub dim: usize,
    pub batch: usize,
    pub mf_events_per_s: f64,
    pub two_tower_events_per_s: Option<f64>,
    /// The same MF step in PyTorch on the same events; null when PyTorch is missing.
    pub torch_mf_events_per_s: Option<f64>,
    /// `mf_events_per_s / torch_mf_events_per_s`.
    pub mf_vs_torch: Option<f64>,
    /// Resident memory added per user at d = `dim` (tables, Adagrad state, id map),
    /// measured as the RSS growth over `memory_users` new users.
    pub bytes_per_user: f64,
    /// The same for the two-tower model (history ring included).
    pub two_tower_bytes_per_user: f64,
    pub memory_users: usize,
}

/// Resident set size of this process, bytes (Linux `/proc/self/status`).
fn rss_bytes() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS in /proc/self/status")?;
    Ok(kb * 1024)
}

/// `recsys bench train`: MF training steps (the trainer's own step: gather, burn
/// autodiff, row-wise Adagrad) on synthetic data, and trainer memory per user.
pub fn train(opts: TrainBenchOptions) -> anyhow::Result<TrainBenchReport> {
    use recsys_engine::device::autodiff_device;
    use recsys_engine::mf::{MfConfig, MfModel};
    use recsys_engine::synth::SynthConfig;
    use recsys_engine::two_tower::{TwoTowerConfig, TwoTowerModel};

    let cfg = MfConfig {
        dim: opts.dim,
        ..MfConfig::default()
    };
    let tower_cfg = TwoTowerConfig {
        dim: opts.dim,
        ..TwoTowerConfig::default()
    };
    eprintln!(
        "generating {} events over {} users x {} items",
        opts.events, opts.users, opts.items
    );
    let data = SynthConfig {
        users: opts.users,
        items: opts.items,
        events: opts.events,
        clusters: 100,
        seed: opts.seed,
        ..SynthConfig::default()
    }
    .generate()
    .map_err(anyhow::Error::msg)?;
    eprintln!("backend {:?}", opts.backend);
    let mut model = MfModel::new(cfg.clone(), autodiff_device(opts.backend)?)?;
    let mf_events_per_s = events_per_s(&data.train, opts.batch, &mut |b| {
        model.train_events(b).map(|_| ())
    })?;
    eprintln!(
        "MF d={} batch {}: {mf_events_per_s:.0} events/s",
        opts.dim, opts.batch
    );
    drop(model);

    let mut tower = TwoTowerModel::new(tower_cfg.clone(), autodiff_device(opts.backend)?)?;
    let two_tower_events_per_s = events_per_s(&data.train, opts.batch, &mut |b| {
        tower.train_events(b).map(|_| ())
    })?;
    eprintln!(
        "two-tower d={} hidden {} history {} batch {}: {two_tower_events_per_s:.0} events/s",
        opts.dim,
        tower.config().hidden,
        tower.config().history_len,
        opts.batch
    );
    drop(tower);

    let torch_mf_events_per_s = match &opts.torch_script {
        Some(script) => torch_peer(script, &data.train, &opts)?,
        None => None,
    };
    let mf_vs_torch = torch_mf_events_per_s.map(|t| mf_events_per_s / t);
    if let Some(r) = mf_vs_torch {
        eprintln!("MF recsys/torch: {r:.2}x");
    }
    drop(data);

    // Memory: a fresh model learns `memory_users` users over 1,000 items; the RSS growth
    // divided by the users is what one user costs (the 1,000 item rows are noise).
    let mut model = MfModel::new(cfg, autodiff_device(opts.backend)?)?;
    let bytes_per_user = memory_per_user(opts.memory_users, opts.batch, |b| {
        model.train_events(b).map(|_| ())
    })?;
    eprintln!(
        "memory: {bytes_per_user:.0} bytes per user over {} users at d={} \
         (tables {} B/user of it: {} f32 + 1 Adagrad accumulator)",
        opts.memory_users,
        opts.dim,
        (opts.dim + 1) * 4,
        opts.dim
    );
    drop(model);
    let mut tower = TwoTowerModel::new(tower_cfg.clone(), autodiff_device(opts.backend)?)?;
    let two_tower_bytes_per_user = memory_per_user(opts.memory_users, opts.batch, |b| {
        tower.train_events(b).map(|_| ())
    })?;
    eprintln!("two-tower memory: {two_tower_bytes_per_user:.0} bytes per user");
    drop(tower);
    Ok(TrainBenchReport {
        backend: opts.backend,
        users: opts.users,
        items: opts.items,
        events: opts.events,
        dim: opts.dim,
        batch: opts.batch,
        mf_events_per_s,
        two_tower_events_per_s: Some(two_tower_events_per_s),
        torch_mf_events_per_s,
        mf_vs_torch,
        bytes_per_user,
        two_tower_bytes_per_user,
        memory_users: opts.memory_users,
    })
}

/// Training throughput over `events` in batches, after 5 warm-up batches (the first
/// steps allocate the tables and burn's buffers).
fn events_per_s(
    events: &[recsys_schemas::Event],
    batch: usize,
    step: &mut dyn FnMut(&[recsys_schemas::Event]) -> recsys_engine::Result<()>,
) -> anyhow::Result<f64> {
    for b in events.chunks(batch).take(5) {
        step(b)?;
    }
    let started = Instant::now();
    let mut trained = 0usize;
    for b in events.chunks(batch).skip(5) {
        step(b)?;
        trained += b.len();
    }
    Ok(trained as f64 / started.elapsed().as_secs_f64())
}

/// RSS growth per user while `train` learns `users` new users (over 1,000 items, whose
/// rows are noise next to the users').
fn memory_per_user(
    users: usize,
    batch_size: usize,
    mut train: impl FnMut(&[recsys_schemas::Event]) -> recsys_engine::Result<()>,
) -> anyhow::Result<f64> {
    // The first 1% of users (at least one batch) warm up: the step's scratch buffers and
    // allocator arenas are a fixed cost, not a per-user one, so growth is measured after.
    let warm = (users / 100).max(batch_size).min(users);
    let mut before = rss_bytes()?;
    let mut batch = Vec::with_capacity(batch_size);
    for u in 0..users {
        batch.push(recsys_schemas::Event {
            user_id: format!("user-{u:09}"),
            item_id: format!("item-{}", u % 1000),
            kind: "click".into(),
            weight: 1.0,
            ts: 0,
            event_id: None,
        });
        if batch.len() == batch_size {
            train(&batch)?;
            batch.clear();
        }
        if u + 1 == warm {
            if !batch.is_empty() {
                train(&batch)?;
                batch.clear();
            }
            before = rss_bytes()?;
        }
    }
    if !batch.is_empty() {
        train(&batch)?;
    }
    Ok(rss_bytes()?.saturating_sub(before) as f64 / (users - warm).max(1) as f64)
}

/// Runs the PyTorch peer on the same events (as dense rows); `None` when `python3` or
/// PyTorch is missing, with the reason on stderr.
fn torch_peer(
    script: &std::path::Path,
    events: &[recsys_schemas::Event],
    opts: &TrainBenchOptions,
) -> anyhow::Result<Option<f64>> {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import torch"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        _ => {
            eprintln!(
                "PyTorch peer skipped: `python3 -c 'import torch'` failed (pip install torch)"
            );
            return Ok(None);
        }
    }
    let mut users = recsys_engine::ids::IdMap::new();
    let mut items = recsys_engine::ids::IdMap::new();
    let mut bytes = Vec::with_capacity(events.len() * 8);
    for e in events {
        bytes.extend_from_slice(&(users.get_or_insert(&e.user_id) as i32).to_le_bytes());
        bytes.extend_from_slice(&(items.get_or_insert(&e.item_id) as i32).to_le_bytes());
    }
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("events.bin");
    std::fs::write(&data, bytes)?;
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg("--data")
        .arg(&data)
        .args(["--users", &users.len().to_string()])
        .args(["--items", &items.len().to_string()])
        .args(["--dim", &opts.dim.to_string()])
        .args(["--batch", &opts.batch.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        anyhow::bail!("{} failed: {}", script.display(), out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(last).with_context(|| format!("torch peer printed {last:?}"))?;
    Ok(v["events_per_s"].as_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oha_summary_counts_non_200_and_connection_errors_but_not_the_deadline() {
        let json = br#"{
            "summary": {"requestsPerSec": 999.5},
            "latencyPercentiles": {"p50": 0.0005, "p99": 0.002, "p99.9": 0.004},
            "statusCodeDistribution": {"200": 990, "503": 7},
            "errorDistribution": {"aborted due to deadline": 12, "connection closed": 3}
        }"#;
        assert_eq!(oha_errors(json).unwrap(), 10);
        assert!(oha_errors(b"not json").is_err());
    }

    #[test]
    fn cpu_use_counts_this_process_and_the_generators_it_names() {
        use std::io::BufRead;
        let me = std::process::id();
        let before = CpuSample::take(me, &[]).expect("/proc is readable");
        let thread_before = proc_cpu("thread-self").unwrap();
        // Burn about 0.3 s of CPU on this thread...
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let thread_after = proc_cpu("thread-self").unwrap();
        // ...and in a child that then stays alive, as a generator is when it is read.
        let child_started = Instant::now();
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; echo burnt; exec sleep 30",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "burnt");
        let child_wall = child_started.elapsed().as_secs_f64();
        let cpu = before.cores_since(me, &[child.id()]).unwrap();
        let secs = started.elapsed().as_secs_f64();
        let gone = before.cores_since(me, &[u32::MAX]);
        child.kill().unwrap();
        child.wait().unwrap();
        // Other tests' threads may add to the process, never take away; ticks are 10 ms.
        let thread_cores = (thread_after - thread_before) / secs;
        assert!(thread_after > thread_before, "the busy thread used no CPU");
        assert!(
            cpu.server >= thread_cores - 0.05,
            "{cpu:?} < {thread_cores}"
        );
        assert!(
            cpu.generators * secs >= 0.3 * child_wall,
            "{cpu:?}: the CPU-bound child ran {child_wall:.2} s"
        );
        // The same process read as "redis" a moment after "self".
        assert!((cpu.server - cpu.redis).abs() < 0.15, "{cpu:?}");
        assert!(cpu.machine >= cpu.server - 0.05, "{cpu:?}");
        assert!(
            cpu.stolen >= 0.0 && cpu.stolen <= cpu.cores as f64 + 0.05,
            "{cpu:?}"
        );
        // Waiting for a core is read for the same processes.
        assert!(cpu.waiting.is_some(), "schedstat is readable");
        let mut threads = HashMap::new();
        assert!(proc_run_queue_waits("self", &mut threads).is_some());
        let me_thread: u32 = std::fs::read_link("/proc/thread-self")
            .unwrap()
            .file_name()
            .and_then(|t| t.to_str()?.parse().ok())
            .unwrap();
        assert!(
            threads.contains_key(&me_thread),
            "{threads:?} lacks {me_thread}"
        );
        assert!(proc_run_queue_waits("not-a-pid", &mut threads).is_none());
        // A generator that cannot be read leaves the split unknown rather than short.
        assert!(gone.is_none());
        assert!(proc_cpu("not-a-pid").is_none());
    }

    #[test]
    fn run_queue_wait_counts_each_threads_growth_and_never_an_ended_thread_against_it() {
        let before = HashMap::from([(1, 0.5), (2, 9.0)]);
        // Thread 1 waited 0.25 s more, thread 2 ended, thread 3 started and waited 0.1 s.
        let now = HashMap::from([(1, 0.75), (3, 0.1)]);
        assert!((waited_since(&before, &now) - 0.35).abs() < 1e-12);
        assert_eq!(waited_since(&before, &HashMap::new()), 0.0);
    }

    #[test]
    fn waiting_for_a_core_counts_threads_that_outnumber_the_cores() {
        let me = std::process::id();
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let before = CpuSample::take(me, &[]).unwrap();
        let started = Instant::now();
        // One CPU-bound thread more than there are cores, for 0.3 s: together they wait
        // about 0.3 s for a core, whatever else the machine runs.
        let burners: Vec<_> = (0..=cores)
            .map(|_| {
                std::thread::spawn(|| {
                    let started = Instant::now();
                    let mut x = 0u64;
                    while started.elapsed() < Duration::from_millis(300) {
                        x = std::hint::black_box(x.wrapping_mul(6364136223846793005) + 1);
                    }
                    // Read while the thread lives: an exited thread leaves /proc.
                    std::thread::sleep(Duration::from_millis(200));
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(350));
        let cpu = before.cores_since(me, &[]).unwrap();
        let secs = started.elapsed().as_secs_f64();
        for b in burners {
            b.join().unwrap();
        }
        let waited = cpu.waiting.unwrap().server * secs;
        assert!(waited >= 0.05, "{cpu:?}: {waited:.3} s waited");
    }

    #[test]
    fn run_percentiles_come_from_every_generators_request_log_in_the_window() {
        let dir = tempfile::tempdir().unwrap();
        // oha 1.16's request log: one row per answered request, times in seconds on the
        // process's clock, the scheduled release NULL without `--latency-correction`.
        let write = |name: &str, rows: &[(Option<f64>, f64, f64)]| {
            let path = dir.path().join(name);
            let db = rusqlite::Connection::open(&path).unwrap();
            db.execute_batch(
                "CREATE TABLE oha (url TEXT NOT NULL, start REAL NOT NULL, \
                 start_latency_correction REAL, end REAL NOT NULL, duration REAL NOT NULL, \
                 status INTEGER NOT NULL, len_bytes INTEGER NOT NULL, run INTEGER NOT NULL)",
            )
            .unwrap();
            for &(scheduled, start, duration) in rows {
                db.execute(
                    "INSERT INTO oha VALUES ('/', ?2, ?1, ?2 + ?3, ?3, 200, 10, 1)",
                    rusqlite::params![scheduled, start, duration],
                )
                .unwrap();
            }
            path
        };
        // Process a runs 3 s with its window at [1, 2); b runs 2 s, window at [0, 1):
        // they end together. a: 99 fast requests in the window (scheduled releases; the
        // actual sends lag, one past the window's end), slow ones before and after it.
        let mut a: Vec<(Option<f64>, f64, f64)> = (0..99)
            .map(|i| {
                (
                    Some(1.0 + f64::from(i) / 100.0),
                    1.03 + f64::from(i) / 100.0,
                    0.001,
                )
            })
            .collect();
        a.extend([(Some(0.5), 0.5, 0.050), (Some(2.5), 2.5, 0.050)]);
        // b: one slow request in the window, released without correction, and one outside.
        let b = [(None, 0.5, 0.009), (None, 1.5, 0.070)];
        let logs = [
            request_log(&write("a.db", &a)).unwrap(),
            request_log(&write("b.db", &b)).unwrap(),
        ];
        assert_eq!(logs[0][0], (1.0, 1.0), "release = scheduled, latency in ms");
        assert_eq!(
            logs[1][0],
            (0.5, 9.0),
            "release = start when nothing was scheduled"
        );
        let (window, whole) = window_latencies(&logs, &[2.0, 1.0], 1.0);
        assert_eq!((window.len(), whole.len()), (100, 103));
        // Merged over both processes: the slow one is the 100th of 100, above the p99
        // of the two together though it is b's whole p50.
        assert!((nearest_rank(&window, 500) - 1.0).abs() < 1e-9);
        assert!((nearest_rank(&window, 990) - 1.0).abs() < 1e-9);
        assert!((nearest_rank(&window, 999) - 9.0).abs() < 1e-9);
        assert!((nearest_rank(&whole, 999) - 70.0).abs() < 1e-9);
        assert!(nearest_rank(&[], 500).is_nan());
        assert!((nearest_rank(&[2.0], 999) - 2.0).abs() < 1e-9);
        assert!(request_log(&dir.path().join("missing.db")).is_err());
    }

    #[test]
    fn server_time_comes_from_the_metrics_histograms_between_two_readings() {
        use recsys_serving::metrics::Metrics;
        let m = Metrics::default();
        let route = "/v1/users/{user_id}/recommendations";
        m.observe(route, "GET", 200, 0.0003);
        m.store_lookup.observe(Duration::from_micros(900));
        let before = ServerTimes::parse(&m.render(&[]));
        // In the window: two fast, one at 3 ms, one 404 at 7 ms on another route, and a
        // slow scrape of /metrics, which does not count; three lookups, two searches.
        m.observe(route, "GET", 200, 0.0004);
        m.observe(route, "GET", 200, 0.0009);
        m.observe(route, "GET", 200, 0.003);
        m.observe("/v1/items/{item_id}/similar", "GET", 404, 0.007);
        m.observe("/metrics", "GET", 200, 0.2);
        for us in [100, 200, 300] {
            m.store_lookup.observe(Duration::from_micros(us));
        }
        for us in [50, 150] {
            m.search.observe(Duration::from_micros(us));
        }
        let after = ServerTimes::parse(&m.render(&[]));
        assert_eq!(after.request_buckets.last(), Some(&(f64::INFINITY, 5)));
        let shares = shares_within(&before.request_buckets, &after.request_buckets);
        let at = |ms: f64| {
            shares
                .iter()
                .find(|(b, _)| (b - ms).abs() < 1e-9)
                .map(|&(_, s)| s)
        };
        assert_eq!(at(0.5), Some(0.25));
        assert_eq!(at(1.0), Some(0.5));
        assert_eq!(at(5.0), Some(0.75));
        assert_eq!(at(10.0), Some(1.0));
        assert!(shares_within(&after.request_buckets, &after.request_buckets).is_empty());
        let means = after.means_since(&before);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        // (0.4 + 0.9 + 3 + 7) / 4 requests; (0.1 + 0.2 + 0.3) / 3; (0.05 + 0.15) / 2.
        assert!(close(means.request, 2.825), "{means:?}");
        assert!(close(means.store_lookup, 0.2), "{means:?}");
        assert!(close(means.search, 0.1), "{means:?}");
        assert!(
            after.means_since(&after).search.is_nan(),
            "no searches, no mean"
        );
        let line = server_time_line(&shares, Some(&means));
        assert!(
            line.contains("≤ 1 ms 50.0%") && line.contains("≤ 5 ms 75.0%"),
            "{line}"
        );
        assert!(
            line.contains("lookup 0.200 ms, index search 0.100 ms"),
            "{line}"
        );
    }
}
