//! `recsys`: the all-in-one command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use recsys::bench::{self, IndexBenchOptions, ServeBenchOptions, TrainBenchOptions};
use recsys::config::Config;
use recsys::demo::{self, DemoOptions};

#[derive(Parser)]
#[command(name = "recsys", version, about = "Streaming recommendation engine")]
struct Cli {
    /// TOML config file (defaults are compiled in; RECSYS__SECTION__KEY variables override).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline on an embedded broker with synthetic data and report.
    Demo {
        #[arg(long, default_value_t = DemoOptions::default().users)]
        users: usize,
        #[arg(long, default_value_t = DemoOptions::default().items)]
        items: usize,
        /// Training events in the stream.
        #[arg(long, default_value_t = DemoOptions::default().events)]
        events: usize,
        #[arg(long, default_value_t = DemoOptions::default().seed)]
        seed: u64,
        /// Users queried over HTTP and evaluated.
        #[arg(long, default_value_t = DemoOptions::default().queries)]
        queries: usize,
        /// Print the summary as one JSON object on the last line.
        #[arg(long)]
        json: bool,
    },
    /// Trainer and HTTP server in one process against the configured brokers and store.
    Run,
    /// The online trainer alone (user vectors to Redis, item vectors to Kafka).
    Train,
    /// One serving replica (user vectors from Redis, item vectors from Kafka).
    Serve,
    /// Benchmarks that print measured numbers.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Print the effective configuration (defaults + file + environment) and exit.
    Config,
}

#[derive(Subcommand)]
enum BenchCommand {
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
        /// Print the report as one JSON object on the last line.
        #[arg(long)]
        json: bool,
    },
    /// The HTTP API under a fixed-rate load from `oha` (cargo install oha), with the bare
    /// index search and Redis lookup measured in the same run.
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
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,recsys=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let cfg = Config::load(cli.config.as_deref(), std::env::vars())?;
    match cli.command {
        Command::Demo {
            users,
            items,
            events,
            seed,
            queries,
            json,
        } => {
            let opts = DemoOptions {
                users,
                items,
                events,
                seed,
                queries,
                ..DemoOptions::default()
            };
            let report = demo::run(cfg, opts).await?;
            report.print();
            if json {
                println!("{}", report.json_line());
            }
        }
        Command::Run => recsys::run::run(cfg).await?,
        Command::Train => recsys::run::train(cfg).await?,
        Command::Serve => recsys::run::serve(cfg).await?,
        Command::Bench {
            what:
                BenchCommand::Index {
                    items,
                    dim,
                    queries,
                    json,
                },
        } => {
            let report = bench::index(IndexBenchOptions {
                items,
                dim,
                queries,
                ..IndexBenchOptions::default()
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            }
        }
        Command::Bench {
            what:
                BenchCommand::Train {
                    users,
                    items,
                    events,
                    memory_users,
                    backend,
                    json,
                },
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
        Command::Bench {
            what:
                BenchCommand::Serve {
                    users,
                    items,
                    rate,
                    seconds,
                    index,
                    json,
                },
        } => {
            let report = bench::serve(
                ServeBenchOptions {
                    users,
                    items,
                    rates: rate,
                    seconds,
                    index,
                    ..ServeBenchOptions::default()
                },
                cfg.serving.clone(),
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            }
        }
        Command::Config => print!("{}", toml::to_string_pretty(&cfg)?),
    }
    Ok(())
}
