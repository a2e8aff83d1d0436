//! One serving replica as a long-running process: user vectors from Redis, the catalog
//! from the newest base snapshot and the `item-vectors` topic, the HTTP API, and a
//! graceful stop on Ctrl-C or SIGTERM. `recsys serve` and `recsys-serve` both run this.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use recsys_index::IndexConfig;
use recsys_schemas::{EventLimits, KafkaConfig};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{
    AppState, CatalogHolder, ItemFollower, KafkaEventSink, RedisUserVectorStore, Result,
    ServingConfig, ServingError, StoreConfig,
};

/// What a replica reads of the configuration.
#[derive(Debug, Clone)]
pub struct Replica {
    pub serving: ServingConfig,
    pub index: IndexConfig,
    /// The `[kafka]` table.
    pub kafka: KafkaConfig,
    /// `[store]`: the Redis URL and its TLS files.
    pub store: StoreConfig,
    /// `[events]`: the bounds on what `POST /v1/events` accepts.
    pub events: EventLimits,
}

impl Replica {
    /// Runs until `stop` resolves (then drains HTTP and stops following), or until the
    /// server or the item follower fails.
    pub async fn run(self, stop: impl Future<Output = std::io::Result<()>>) -> Result<()> {
        let cfg = self.serving;
        if self.store.redis_url.is_empty() {
            return Err(ServingError::Config(
                "store.redis_url: a serving replica reads user vectors from Redis; set it \
                 (e.g. redis://127.0.0.1:6379) or use `recsys run`"
                    .into(),
            ));
        }
        if cfg.follow.brokers.is_empty() {
            return Err(ServingError::Config(
                "serving.follow.brokers: a serving replica follows the item-vector topic; \
                 set the Kafka bootstrap servers"
                    .into(),
            ));
        }
        let url = &self.store.redis_url;
        let reader = RedisUserVectorStore::connect_tls(
            url,
            &self.store.tls()?,
            Duration::from_millis(cfg.store_timeout_ms),
        )
        .await
        .map_err(|e| ServingError::Config(format!("store.redis_url: connecting to {url}: {e}")))?;
        let catalog = Arc::new(CatalogHolder::new(cfg.generation, self.index));
        let follower = ItemFollower::new(
            cfg.follow.clone(),
            self.kafka.clone(),
            cfg.generation,
            catalog.clone(),
        )?;
        let follow = follower.status();
        let cancel = CancellationToken::new();
        let mut follower = tokio::spawn(follower.run(cancel.clone()));
        let events = KafkaEventSink::new(&self.kafka, &cfg.follow.brokers, &cfg.events_topic)?;
        let bind = cfg.bind.clone();
        let state = AppState::new(catalog, Arc::new(reader), cfg, follow)
            .map_err(|e| ServingError::Config(format!("serving.search_threads: {e}")))?
            .with_events(Arc::new(events))
            .with_event_limits(self.events);
        let (server, addr) = crate::start(state).map_err(|e| {
            ServingError::Config(format!("serving.bind: cannot listen on {bind}: {e}"))
        })?;
        let handle = server.handle();
        let mut server = tokio::spawn(server);
        info!(%addr, "serving replica running");
        let task = |e: tokio::task::JoinError| ServingError::Internal(format!("task: {e}"));
        tokio::select! {
            r = stop => r.map_err(|e| ServingError::Internal(format!("signal: {e}")))?,
            done = &mut follower => {
                done.map_err(task)??;
                return Err(ServingError::Internal("item follower stopped".into()));
            }
            done = &mut server => {
                done.map_err(task)?.map_err(|e| ServingError::Internal(e.to_string()))?;
                return Err(ServingError::Internal("HTTP server stopped".into()));
            }
        }
        info!("shutting down: draining HTTP");
        handle.stop(true).await;
        cancel.cancel();
        follower.await.map_err(task)??;
        Ok(())
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// Logs to stderr, filtered by `RUST_LOG` or else `default` (e.g. `"warn,recsys=info"`):
/// the set-up every recsys binary starts with.
pub fn init_tracing(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        .init();
}
