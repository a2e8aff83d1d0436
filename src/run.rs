//! The long-running commands:
//! - `recsys run`: trainer and server in one process (user vectors in Redis, or in memory
//!   when `store.redis_url` is empty);
//! - `recsys train`: the online trainer alone, writing user vectors to Redis and item
//!   vectors to the `item-vectors` topic (and base snapshots to `trainer.snapshot_dir`);
//! - `recsys serve`: one serving replica, reading user vectors from Redis and following
//!   the `item-vectors` topic from the newest snapshot in `serving.follow.snapshot_dir`
//!   (the same replica as the `recsys-serve` binary).
//!
//! Each stops gracefully on Ctrl-C or SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use recsys_serving::replica::{Replica, shutdown_signal};
use recsys_serving::{RedisUserVectorStore, UserVectorStore};
use recsys_trainer::sink::{RedisUserVectorSink, UserVectorSink};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::allinone::{Pipeline, memory_store, online_trainer};
use crate::config::Config;

fn require_redis<'a>(cfg: &'a Config, command: &str) -> anyhow::Result<&'a str> {
    if cfg.store.redis_url.is_empty() {
        bail!(
            "store.redis_url: `recsys {command}` runs apart from its peer, so user vectors must \
             go through Redis; set it (e.g. redis://127.0.0.1:6379) or use `recsys run`"
        );
    }
    Ok(&cfg.store.redis_url)
}

/// The trainer's half of the Redis user store.
pub async fn redis_writer(cfg: &Config, url: &str) -> anyhow::Result<Arc<dyn UserVectorSink>> {
    let writer = RedisUserVectorSink::connect_tls(
        url,
        &cfg.store.tls()?,
        cfg.trainer.user_vector_ttl_s,
        cfg.trainer.history_len,
    )
    .await
    .with_context(|| format!("store.redis_url: connecting to {url}"))?;
    Ok(Arc::new(writer))
}

async fn redis_reader(cfg: &Config, url: &str) -> anyhow::Result<Arc<dyn UserVectorStore>> {
    let reader = RedisUserVectorStore::connect_tls(
        url,
        &cfg.store.tls()?,
        Duration::from_millis(cfg.serving.store_timeout_ms),
    )
    .await
    .with_context(|| format!("store.redis_url: connecting to {url}"))?;
    Ok(Arc::new(reader))
}

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let (writer, reader) = if cfg.store.redis_url.is_empty() {
        memory_store(cfg.trainer.history_len)
    } else {
        let url = &cfg.store.redis_url;
        (
            redis_writer(&cfg, url).await?,
            redis_reader(&cfg, url).await?,
        )
    };
    let mut pipeline = Pipeline::start(&cfg, writer, reader)?;
    info!(addr = %pipeline.addr, brokers = %cfg.trainer.brokers, "recsys running");
    let result = pipeline.run_until_signal().await;
    info!("shutting down: flushing the trainer, draining HTTP");
    pipeline.shutdown().await?;
    result
}

pub async fn train(cfg: Config) -> anyhow::Result<()> {
    let url = require_redis(&cfg, "train")?;
    let writer = redis_writer(&cfg, url).await?;
    let trainer = online_trainer(&cfg, writer)?;
    let admin = if cfg.trainer.admin_bind.is_empty() {
        None
    } else {
        let bind = &cfg.trainer.admin_bind;
        let (server, addr) = crate::admin::start(bind, trainer.stats())
            .with_context(|| format!("trainer.admin_bind: cannot listen on {bind}"))?;
        info!(%addr, "trainer admin endpoints: /healthz /readyz /metrics");
        let handle = server.handle();
        tokio::spawn(server);
        Some(handle)
    };
    let cancel = CancellationToken::new();
    let mut task = tokio::spawn(trainer.run(cancel.clone()));
    info!(brokers = %cfg.trainer.brokers, topic = %cfg.trainer.topic, "trainer running");
    tokio::select! {
        r = shutdown_signal() => r?,
        done = &mut task => {
            done.context("trainer task")??;
            bail!("trainer stopped");
        }
    }
    info!("shutting down: training what is buffered, publishing, writing a snapshot");
    cancel.cancel();
    task.await.context("trainer task")??;
    if let Some(admin) = admin {
        admin.stop(true).await;
    }
    Ok(())
}

pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    require_redis(&cfg, "serve")?;
    let mut serving = cfg.serving.clone();
    if serving.follow.brokers.is_empty() {
        serving.follow.brokers = cfg.trainer.brokers.clone();
    }
    Replica {
        serving,
        index: cfg.index.clone(),
        kafka: cfg.kafka.clone(),
        store: cfg.store.clone(),
        events: cfg.events,
    }
    .run(shutdown_signal())
    .await?;
    Ok(())
}
