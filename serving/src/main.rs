//! `recsys-serve`: one serving replica, without the trainer (its binary links neither burn
//! nor the training code). It reads the `[serving]`, `[index]` and `[store]` sections of
//! the shared config file and ignores the trainer's; `serving.follow.brokers` must name
//! the Kafka cluster.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use recsys_index::IndexConfig;
use recsys_schemas::{EventLimits, KafkaConfig};
use recsys_serving::replica::{Replica, init_tracing, shutdown_signal};
use recsys_serving::{ServingConfig, StoreConfig};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
#[command(name = "recsys-serve", version, about = "One recsys serving replica")]
struct Cli {
    /// TOML config file (defaults are compiled in; RECSYS__SECTION__KEY variables override).
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the effective configuration of the sections a replica reads, and exit.
    Config,
}

/// The config file as a replica reads it: its own sections checked, the trainer's
/// accepted unread (the trainer checks them).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ServeConfig {
    events: EventLimits,
    index: IndexConfig,
    kafka: KafkaConfig,
    serving: ServingConfig,
    store: StoreConfig,
    #[serde(skip_serializing)]
    model: serde::de::IgnoredAny,
    #[serde(skip_serializing)]
    compute: serde::de::IgnoredAny,
    #[serde(skip_serializing)]
    trainer: serde::de::IgnoredAny,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing("warn,recsys=info,recsys_serving=info");
    let cli = Cli::parse();
    recsys_index::check_cpu()?;
    let cfg: ServeConfig =
        recsys_schemas::config::load_layered(cli.config.as_deref(), std::env::vars())?;
    cfg.index.validate()?;
    cfg.serving.validate()?;
    cfg.events.validate()?;
    recsys_serving::kafka::check(&cfg.kafka)?;
    if let Some(Command::Config) = cli.command {
        print!("{}", toml::to_string_pretty(&cfg)?);
        return Ok(());
    }
    Replica {
        serving: cfg.serving,
        index: cfg.index,
        kafka: cfg.kafka,
        store: cfg.store,
        events: cfg.events,
    }
    .run(shutdown_signal())
    .await?;
    Ok(())
}
