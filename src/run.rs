//! `recsys run`: trainer and server in one process against configured brokers, with user
//! vectors in Redis (or in memory when `store.redis_url` is empty).

use std::sync::Arc;

use anyhow::Context;
use recsys_serving::RedisUserVectorStore;
use recsys_trainer::sink::RedisUserVectorSink;
use tracing::info;

use crate::allinone::{Pipeline, memory_store};
use crate::config::Config;

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let (writer, reader) = if cfg.store.redis_url.is_empty() {
        memory_store(cfg.trainer.history_len)
    } else {
        let url = &cfg.store.redis_url;
        let ctx = || format!("store.redis_url: connecting to {url}");
        let writer = RedisUserVectorSink::connect(
            url,
            cfg.trainer.user_vector_ttl_s,
            cfg.trainer.history_len,
        )
        .await
        .with_context(ctx)?;
        let reader = RedisUserVectorStore::connect(
            url,
            std::time::Duration::from_millis(cfg.serving.store_timeout_ms),
        )
        .await
        .with_context(ctx)?;
        (
            Arc::new(writer) as Arc<dyn recsys_trainer::sink::UserVectorSink>,
            Arc::new(reader) as Arc<dyn recsys_serving::UserVectorStore>,
        )
    };
    let mut pipeline = Pipeline::start(&cfg, writer, reader)?;
    info!(addr = %pipeline.addr, brokers = %cfg.trainer.brokers, "recsys running");
    let result = pipeline.run_until_signal().await;
    info!("shutting down: flushing the trainer, draining HTTP");
    pipeline.shutdown().await?;
    result
}
