//! What a serve benchmark is asked to do and what it reports: its options, each run's
//! figures, the summary and the verdict on the serving targets.

use serde::Serialize;

use super::procfs::CpuUse;

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
    /// `oha` processes per run; 0: one per 1,000 req/s offered (`load.rs`).
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
    /// state, all processes together; see `load.rs`).
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
