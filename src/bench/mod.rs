//! The benchmarks of `recsys bench`, each printing what it measured on the real code
//! path:
//! - `train.rs`: the training steps' throughput, the PyTorch peer, memory per user;
//! - `freshness.rs`: event to fresh user vector, recommendations and searchable new item,
//!   across trainer, replica and Redis processes and a broker;
//! - `index.rs`, `delta.rs`: the item index per configuration, and a delta's time to
//!   searchable in a replica;
//! - `serve.rs`, `runs.rs`, `summary.rs`, `bare.rs`: the HTTP API under fixed-rate load,
//!   with the bare search and lookup measured in the same run;
//! - `load.rs`: the `oha` load generators and their request logs; `procfs.rs`: CPU and
//!   run-queue wait from `/proc`; `scrape.rs`: the server's own histograms from
//!   `/metrics`.

mod bare;
mod delta;
mod freshness;
mod index;
mod load;
mod procfs;
mod runs;
mod scrape;
mod serve;
mod summary;
mod train;

pub use freshness::{FreshnessOptions, FreshnessReport, Latency, RateReport, freshness};
pub use index::{IndexBenchOptions, IndexBenchReport, IndexRow, index};
pub use procfs::{CpuUse, Waiting};
pub use runs::{
    ServeBenchOptions, ServeBenchReport, ServeRun, ServerMeans, TARGET_OVERHEAD, TARGET_RPS,
    Targets,
};
pub use serve::serve;
pub use train::{TrainBenchOptions, TrainBenchReport, default_torch_script, train};

use rand::{RngExt, SeedableRng, rngs::StdRng};

/// Items and queries around shared cluster centres, the shape of trained embeddings;
/// the noise is as wide as the spread of the centres, so clusters overlap.
pub(crate) fn clustered(n: usize, queries: usize, dim: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
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

/// The upper median (NaN for none): for an even count, the higher of the two middle
/// values, where [`nearest_rank`] takes the lower; so the median p99 of `--repeat 2`
/// is the worse run's.
pub(crate) fn p50(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}
