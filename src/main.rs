//! `recsys`: the all-in-one command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use recsys::bench::{self, IndexBenchOptions, ServeBenchOptions, TrainBenchOptions};
use recsys::config::Config;
use recsys::demo::{self, DemoOptions};
use recsys::eval;

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
    /// Offline evaluation (DESIGN §5): leave-last-out, full ranking; HR@10, NDCG@10, MRR
    /// and coverage of MF, two-tower and popularity.
    Eval(Box<EvalArgs>),
    /// Archive the events topic as Parquet files by day (exactly once across restarts).
    Archive {
        /// Archive directory.
        #[arg(long)]
        out: PathBuf,
        /// Stop once the topic's ends at start are archived (a catch-up job).
        #[arg(long)]
        until_caught_up: bool,
        /// Events buffered before a flush.
        #[arg(long, default_value_t = 100_000)]
        flush_events: usize,
        /// Seconds between flushes.
        #[arg(long, default_value_t = 10)]
        flush_interval_s: u64,
        #[arg(long)]
        json: bool,
    },
    /// Write a synthetic archive (the `archive` layout) to try `retrain` without a stream.
    Generate {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 50_000)]
        users: usize,
        #[arg(long, default_value_t = 20_000)]
        items: usize,
        /// Days the events span (one directory per day).
        #[arg(long, default_value_t = 7)]
        days: u32,
    },
    /// Nightly retrain from the archive: train, evaluate new vs current vs popularity,
    /// write the report, publish a new generation if it passes the quality gate.
    Retrain {
        /// Archive directory (from `recsys archive` or `recsys generate`).
        #[arg(long)]
        from: PathBuf,
        /// Newest days of the archive to use; the last one is the test day.
        #[arg(long, default_value_t = 7)]
        days: usize,
        /// Report directory (report.md, report.json, PNG plots).
        #[arg(long)]
        out: PathBuf,
        /// Generations directory (CURRENT pointer, g{N}/ checkpoints and snapshots).
        #[arg(long, default_value = "models")]
        models: PathBuf,
        #[arg(long, default_value_t = 3)]
        epochs: usize,
        #[arg(long, default_value_t = 1024)]
        batch: usize,
        /// Test users scored (a seeded sample when more are eligible).
        #[arg(long, default_value_t = 10_000)]
        max_test_users: usize,
        /// Allowed NDCG@10 drop against the current generation.
        #[arg(long, default_value_t = 0.002)]
        margin: f64,
        /// Publish even if the quality gate refuses (logged and reported).
        #[arg(long)]
        force: bool,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[arg(long)]
        json: bool,
    },
    /// Make the previous generation current again.
    Rollback {
        #[arg(long, default_value = "models")]
        models: PathBuf,
    },
    /// Print the effective configuration (defaults + file + environment) and exit.
    Config,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// Format of the input files.
    #[arg(long, value_enum, default_value = "jsonl")]
    format: eval::Format,
    /// Interactions to split per user (leave-last-out by timestamp).
    path: Option<PathBuf>,
    /// An explicit training file (with --test; no split is made).
    #[arg(long, requires = "test", conflicts_with = "path")]
    train: Option<PathBuf>,
    #[arg(long, requires = "train")]
    test: Option<PathBuf>,
    /// Evaluate on the seeded synthetic generator (reports the oracle too).
    #[arg(long, conflicts_with_all = ["path", "train"])]
    synthetic: bool,
    /// Synthetic data: users, items, events.
    #[arg(long, default_value_t = 5_000)]
    users: usize,
    #[arg(long, default_value_t = 2_000)]
    items: usize,
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Models to evaluate, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["mf", "two-tower", "popularity"])]
    models: Vec<eval::ModelName>,
    #[arg(long, default_value_t = eval::EvalOptions::default().dim)]
    dim: usize,
    #[arg(long, default_value_t = eval::EvalOptions::default().epochs)]
    epochs: usize,
    #[arg(long, default_value_t = eval::EvalOptions::default().batch)]
    batch: usize,
    /// Adagrad learning rate of the embedding tables.
    #[arg(long, default_value_t = eval::EvalOptions::default().learning_rate)]
    lr: f32,
    /// MF softmax temperature.
    #[arg(long, default_value_t = eval::EvalOptions::default().temperature)]
    temperature: f32,
    /// Two-tower temperature (its outputs are unit vectors).
    #[arg(long, default_value_t = eval::EvalOptions::default().tower_temperature)]
    tower_temperature: f32,
    #[arg(long, default_value_t = eval::EvalOptions::default().l2)]
    l2: f32,
    /// `softmax` or `bpr`.
    #[arg(long, default_value = "softmax")]
    loss: String,
    /// Uniformly sampled negatives per step, on top of the in-batch items (softmax), MF.
    #[arg(long, default_value_t = eval::EvalOptions::default().negatives)]
    negatives: usize,
    /// The same for the two-tower model.
    #[arg(long, default_value_t = eval::EvalOptions::default().tower_negatives)]
    tower_negatives: usize,
    /// logQ correction of the in-batch softmax.
    #[arg(long)]
    logq: bool,
    #[arg(long, default_value_t = eval::EvalOptions::default().seed)]
    seed: u64,
    #[arg(long)]
    json: bool,
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
    recsys_engine::index::check_cpu()?;
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
                    rerank,
                    checkpoint,
                    json,
                },
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
                    generators,
                    repeat,
                    history,
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
        Command::Eval(a) => {
            let loss = serde_json::from_value(serde_json::Value::String(a.loss.clone())).map_err(
                |_| anyhow::anyhow!("--loss: expected softmax or bpr, got {:?}", a.loss),
            )?;
            if a.batch == 0 || a.epochs > 10_000 {
                anyhow::bail!("--batch must be positive and --epochs at most 10000");
            }
            let opts = eval::EvalOptions {
                format: a.format,
                path: a.path.clone(),
                train: a.train.clone(),
                test: a.test.clone(),
                synthetic: a.synthetic.then(|| recsys_engine::synth::SynthConfig {
                    users: a.users,
                    items: a.items,
                    events: a.events,
                    seed: a.seed,
                    ..Default::default()
                }),
                models: a.models.clone(),
                dim: a.dim,
                epochs: a.epochs,
                batch: a.batch,
                learning_rate: a.lr,
                temperature: a.temperature,
                tower_temperature: a.tower_temperature,
                l2: a.l2,
                loss,
                negatives: a.negatives,
                tower_negatives: a.tower_negatives,
                logq: a.logq,
                seed: a.seed,
            };
            let report = tokio::task::spawn_blocking(move || eval::run(&opts)).await??;
            eval::print(&report);
            if a.json {
                println!("{}", serde_json::to_string(&report)?);
            }
        }
        Command::Archive {
            out,
            until_caught_up,
            flush_events,
            flush_interval_s,
            json,
        } => {
            let opts = recsys::archive::ArchiveOptions {
                brokers: cfg.trainer.brokers.clone(),
                topic: cfg.trainer.topic.clone(),
                group_id: format!("{}-archive", cfg.trainer.group_id),
                out,
                until_caught_up,
                flush_events: flush_events.max(1),
                flush_interval: std::time::Duration::from_secs(flush_interval_s.max(1)),
            };
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = stop.clone();
            tokio::spawn(async move {
                if recsys::run::shutdown_signal().await.is_ok() {
                    flag.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            });
            let report = tokio::task::spawn_blocking(move || {
                recsys::archive::run(&opts, &|| stop.load(std::sync::atomic::Ordering::Relaxed))
            })
            .await??;
            eprintln!(
                "archived {} events ({} malformed skipped); next offsets {:?}",
                report.archived, report.malformed, report.next_offsets
            );
            if json {
                println!("{}", serde_json::to_string(&report)?);
            }
        }
        Command::Generate {
            out,
            events,
            seed,
            users,
            items,
            days,
        } => {
            let data = recsys_engine::synth::SynthConfig {
                users,
                items,
                events,
                seed,
                days,
                clusters: (items / 100).clamp(1, 200),
                ..Default::default()
            }
            .generate()
            .map_err(|e| anyhow::anyhow!("generate: {e}"))?;
            let n = recsys::archive::write_events(&out, &data.train)?;
            eprintln!(
                "wrote {n} events over {} days into {}",
                recsys::archive::days(&out)?.len(),
                out.display()
            );
        }
        Command::Retrain {
            from,
            days,
            out,
            models,
            epochs,
            batch,
            max_test_users,
            margin,
            force,
            seed,
            json,
        } => {
            if batch == 0 || !(margin >= 0.0 && margin.is_finite()) {
                anyhow::bail!("--batch must be positive and --margin a non-negative number");
            }
            let opts = recsys::retrain::RetrainOptions {
                from,
                days,
                out,
                models,
                epochs,
                batch,
                margin,
                force,
                read_rows: 65_536,
                max_test_users: max_test_users.max(1),
                seed,
                model: cfg.model.clone(),
                index: cfg.index.clone(),
                backend: cfg.compute.backend,
                topic: cfg.trainer.topic.clone(),
                progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            };
            // Publishing writes every user's vector under the new generation's keys.
            let users: Option<std::sync::Arc<dyn recsys_trainer::sink::UserVectorSink>> =
                if cfg.store.redis_url.is_empty() {
                    tracing::warn!(
                        "store.redis_url is empty: a published generation's user vectors are \
                         not written here; an online trainer following the models directory \
                         writes them when it switches"
                    );
                    None
                } else {
                    Some(recsys::run::redis_writer(&cfg, &cfg.store.redis_url).await?)
                };
            let report =
                tokio::task::spawn_blocking(move || recsys::retrain::run(&opts, users.as_deref()))
                    .await??;
            eprintln!(
                "{} | new NDCG@10 {:.4}, current {}, popularity {:.4} | {} events x {} epochs at {:.0} events/s, peak RSS {:.0} MiB",
                report.decision,
                report.new.ndcg_at_10,
                report
                    .current
                    .map_or("none".to_owned(), |c| format!("{:.4}", c.ndcg_at_10)),
                report.popularity.ndcg_at_10,
                report.events,
                report.epochs.len(),
                report.events_per_s,
                report.peak_rss_bytes as f64 / 1048576.0
            );
            if json {
                println!("{}", serde_json::to_string(&report)?);
            }
        }
        Command::Rollback { models } => {
            let c = recsys::retrain::rollback(&models)?;
            eprintln!(
                "generation {} is current again (was {:?})",
                c.generation, c.previous
            );
        }
        Command::Config => print!("{}", toml::to_string_pretty(&cfg)?),
    }
    Ok(())
}
