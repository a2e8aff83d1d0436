//! `recsys bench ...` on the command line.

use clap::Subcommand;
use recsys::bench::{
    self, FreshnessOptions, IndexBenchOptions, ServeBenchOptions, TrainBenchOptions,
};
use recsys::config::Config;
use recsys::embedded::BrokerKind;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Event to fresh user vector (Redis), fresh recommendations (HTTP) and a searchable
    /// new item, with trainer, replica and Redis as separate processes.
    Freshness {
        /// `tansu` (a real broker process) or `mock` (librdkafka's, in this process).
        #[arg(long, value_enum, default_value = "tansu")]
        broker: BrokerKind,
        /// Background events per second, comma-separated: one run each.
        #[arg(long, value_delimiter = ',', default_values_t = FreshnessOptions::default().rates)]
        rate: Vec<u32>,
        #[arg(long, default_value_t = FreshnessOptions::default().seconds)]
        seconds: u32,
        #[arg(long, default_value_t = FreshnessOptions::default().users)]
        users: usize,
        #[arg(long, default_value_t = FreshnessOptions::default().items)]
        items: usize,
        /// Probes per second during each run.
        #[arg(long, default_value_t = FreshnessOptions::default().probes_per_s)]
        probes_per_s: f64,
        #[arg(long)]
        json: bool,
    },
    /// Training throughput of the MF step and trainer memory per user.
    Train {
        #[arg(long, default_value_t = TrainBenchOptions::default().users)]
        users: usize,
        #[arg(long, default_value_t = TrainBenchOptions::default().items)]
        items: usize,
        #[arg(long, default_value_t = TrainBenchOptions::default().events)]
        events: usize,
        /// Users in the memory measurement.
        #[arg(long, default_value_t = TrainBenchOptions::default().memory_users)]
        memory_users: usize,
        /// `cpu` (burn-flex), `ndarray` or `cuda`.
        #[arg(long, default_value = "cpu")]
        backend: String,
        #[arg(long)]
        json: bool,
    },
    /// The item index per configuration (flat, IVF-flat, IVF-PQ, IVF-PQ + re-rank): build
    /// time, memory, Recall@10 against exact search, QPS; and delta freshness.
    Index {
        /// Catalog sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = IndexBenchOptions::default().items)]
        items: Vec<usize>,
        #[arg(long, default_value_t = IndexBenchOptions::default().dim)]
        dim: usize,
        /// Queries for recall and batched QPS.
        #[arg(long, default_value_t = IndexBenchOptions::default().queries)]
        queries: usize,
        /// Re-rank depths to measure on IVF-PQ, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = IndexBenchOptions::default().rerank_factors)]
        rerank: Vec<usize>,
        /// Measure on a checkpoint's trained item vectors instead, its users as queries.
        #[arg(long)]
        checkpoint: Option<std::path::PathBuf>,
        /// Print the report as one JSON object on the last line.
        #[arg(long)]
        json: bool,
    },
    /// The HTTP API under a fixed-rate load from `oha` (cargo install oha), with the bare
    /// index search and Redis lookup measured in the same run, just before each load.
    Serve {
        #[arg(long, default_value_t = ServeBenchOptions::default().users)]
        users: usize,
        #[arg(long, default_value_t = ServeBenchOptions::default().items)]
        items: usize,
        /// Offered requests per second, comma-separated: one run each.
        #[arg(long, value_delimiter = ',', default_values_t = ServeBenchOptions::default().rates)]
        rate: Vec<u32>,
        #[arg(long, default_value_t = ServeBenchOptions::default().seconds)]
        seconds: u32,
        /// `ivf-pq` (re-ranked IVF-PQ), `default` (the size-based choice) or a FAISS
        /// factory string.
        #[arg(long, default_value_t = ServeBenchOptions::default().index)]
        index: String,
        /// `oha` processes offering each rate, each at an equal share; 0: one per 1,000
        /// req/s (one oha paces on a 1 ms timer, so above 1,000 req/s it sends bursts).
        #[arg(long, default_value_t = ServeBenchOptions::default().generators)]
        generators: u32,
        /// Passes over the rates; each rate is then judged by the medians of its runs.
        #[arg(long, default_value_t = ServeBenchOptions::default().repeat)]
        repeat: u32,
        /// Recent items of every user, all excluded from their recommendations.
        #[arg(long, default_value_t = ServeBenchOptions::default().history)]
        history: usize,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(what: BenchCommand, cfg: Config) -> anyhow::Result<()> {
    match what {
        BenchCommand::Freshness {
            broker,
            rate,
            seconds,
            users,
            items,
            probes_per_s,
            json,
        } => {
            let report = bench::freshness(FreshnessOptions {
                broker,
                rates: rate,
                seconds,
                users,
                items,
                probes_per_s,
                ..FreshnessOptions::default()
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            }
        }
        BenchCommand::Index {
            items,
            dim,
            queries,
            rerank,
            checkpoint,
            json,
        } => {
            let report = bench::index(
                IndexBenchOptions {
                    items,
                    dim,
                    queries,
                    rerank_factors: rerank,
                    checkpoint,
                    ..IndexBenchOptions::default()
                },
                cfg.index.clone(),
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            }
        }
        BenchCommand::Train {
            users,
            items,
            events,
            memory_users,
            backend,
            json,
        } => {
            let backend = serde_json::from_value(serde_json::Value::String(backend.clone()))
                .map_err(|_| {
                    anyhow::anyhow!("--backend: expected cpu, ndarray or cuda, got {backend:?}")
                })?;
            let report = tokio::task::spawn_blocking(move || {
                bench::train(TrainBenchOptions {
                    users,
                    items,
                    events,
                    memory_users,
                    backend,
                    ..TrainBenchOptions::default()
                })
            })
            .await??;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            }
        }
        BenchCommand::Serve {
            users,
            items,
            rate,
            seconds,
            index,
            generators,
            repeat,
            history,
            json,
        } => {
            let report = bench::serve(
                ServeBenchOptions {
                    users,
                    items,
                    rates: rate,
                    seconds,
                    index,
                    generators,
                    repeat,
                    history,
                    ..ServeBenchOptions::default()
                },
                cfg.serving.clone(),
                cfg.index.clone(),
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            }
        }
    }
    Ok(())
}
