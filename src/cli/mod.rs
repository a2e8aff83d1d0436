//! The command line: every subcommand, its flags, and the call it makes.
//! - `eval.rs`: `recsys eval`; `bench.rs`: `recsys bench ...`;
//! - `nightly.rs`: `archive`, `generate`, `retrain`, `rollback`.

mod bench;
mod eval;
mod nightly;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use recsys::config::Config;
use recsys::demo::{self, DemoOptions};

#[derive(Parser)]
#[command(name = "recsys", version, about = "Streaming recommendation engine")]
pub struct Cli {
    /// TOML config file (defaults are compiled in; RECSYS__SECTION__KEY variables override).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the whole pipeline on an embedded broker with synthetic data and report.
    Demo(DemoArgs),
    /// Trainer and HTTP server in one process against the configured brokers and store.
    Run,
    /// The online trainer alone (user vectors to Redis, item vectors to Kafka).
    Train,
    /// One serving replica (user vectors from Redis, item vectors from Kafka).
    Serve,
    /// Benchmarks that print measured numbers.
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
    /// Offline evaluation: leave-last-out, full ranking; HR@10, NDCG@10, MRR and coverage
    /// of MF, two-tower and popularity.
    Eval(Box<eval::EvalArgs>),
    /// Archive the events topic as Parquet files by day (exactly once across restarts).
    Archive(nightly::ArchiveArgs),
    /// Write a synthetic archive (the `archive` layout) to try `retrain` without a stream.
    Generate(nightly::GenerateArgs),
    /// Nightly retrain from the archive: train, evaluate new vs current vs popularity,
    /// write the report, publish a new generation if it passes the quality gate.
    Retrain(Box<nightly::RetrainArgs>),
    /// Make the previous generation current again.
    Rollback {
        #[arg(long, default_value = "models")]
        models: PathBuf,
    },
    /// Print the effective configuration (defaults + file + environment) and exit.
    Config,
}

#[derive(clap::Args)]
pub struct DemoArgs {
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
}

/// Runs `command` with the effective configuration.
pub async fn run(command: Command, cfg: Config) -> anyhow::Result<()> {
    match command {
        Command::Demo(a) => {
            let opts = DemoOptions {
                users: a.users,
                items: a.items,
                events: a.events,
                seed: a.seed,
                queries: a.queries,
                ..DemoOptions::default()
            };
            let report = demo::run(cfg, opts).await?;
            report.print();
            if a.json {
                println!("{}", report.json_line());
            }
        }
        Command::Run => recsys::run::run(cfg).await?,
        Command::Train => recsys::run::train(cfg).await?,
        Command::Serve => recsys::run::serve(cfg).await?,
        Command::Bench { what } => bench::run(what, cfg).await?,
        Command::Eval(a) => eval::run(*a, cfg).await?,
        Command::Archive(a) => nightly::archive(a, &cfg).await?,
        Command::Generate(a) => nightly::generate(a)?,
        Command::Retrain(a) => nightly::retrain(*a, &cfg).await?,
        Command::Rollback { models } => {
            let c = recsys_trainer::retrain::rollback(&models)?;
            eprintln!(
                "generation {} is current again (was {:?})",
                c.generation, c.previous
            );
        }
        Command::Config => print!("{}", toml::to_string_pretty(&cfg)?),
    }
    Ok(())
}
