//! The all-in-one wiring: trainer and server in one process. Item vectors and the popular
//! list go from the trainer straight into the serving catalog (the `item-vectors` topic
//! will replace this hand-over between processes); user vectors go through a store, in
//! memory or Redis.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use anyhow::{Context, bail};
use async_trait::async_trait;
use recsys_engine::device::autodiff_device;
use recsys_engine::mf::MfModel;
use recsys_engine::store::MemoryUserStore;
use recsys_serving::{AppState, CatalogHolder, UserVectorStore};
use recsys_trainer::sink::{ItemUpdate, ItemVectorSink, MemoryUserVectorSink, UserVectorSink};
use recsys_trainer::{OnlineTrainer, Result, TrainerError, TrainerStats};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Hands item vectors and popularity to a serving catalog in the same process.
pub struct CatalogSink(pub Arc<CatalogHolder>);

#[async_trait]
impl ItemVectorSink for CatalogSink {
    async fn publish_items(&self, generation: u64, updates: Vec<ItemUpdate>) -> Result<()> {
        let catalog = self.0.clone();
        let items = updates.into_iter().map(|u| (u.item_id, u.vector)).collect();
        // Index builds and clones are CPU work: keep them off the async threads.
        tokio::task::spawn_blocking(move || catalog.apply_items(generation, items))
            .await
            .map_err(|e| TrainerError::Task(e.to_string()))?
            .map_err(|e| TrainerError::Task(e.to_string()))
    }

    async fn publish_popular(&self, generation: u64, items: Vec<(String, f32)>) -> Result<()> {
        self.0
            .set_popular(generation, items)
            .map_err(|e| TrainerError::Task(e.to_string()))
    }
}

/// The in-memory user store as both halves.
pub fn memory_store(history_len: usize) -> (Arc<dyn UserVectorSink>, Arc<dyn UserVectorStore>) {
    let store = Arc::new(MemoryUserStore::new());
    (
        Arc::new(MemoryUserVectorSink {
            store: store.clone(),
            history_len,
        }),
        store,
    )
}

/// A running trainer + HTTP server pair.
pub struct Pipeline {
    pub addr: SocketAddr,
    pub catalog: Arc<CatalogHolder>,
    pub stats: Arc<TrainerStats>,
    started: Instant,
    cancel: CancellationToken,
    trainer: Option<JoinHandle<Result<MfModel>>>,
    server: ServerHandle,
    server_task: JoinHandle<std::io::Result<()>>,
}

impl Pipeline {
    /// Starts the server on `cfg.serving.bind` and the trainer on `cfg.trainer.brokers`.
    pub fn start(
        cfg: &Config,
        writer: Arc<dyn UserVectorSink>,
        reader: Arc<dyn UserVectorStore>,
    ) -> anyhow::Result<Self> {
        let catalog = Arc::new(CatalogHolder::new(
            cfg.serving.generation,
            cfg.index.clone(),
        ));
        let (server, addr) = recsys_serving::start(AppState {
            catalog: catalog.clone(),
            users: reader,
            cfg: cfg.serving.clone(),
        })
        .with_context(|| format!("serving.bind: cannot listen on {}", cfg.serving.bind))?;
        let server_handle = server.handle();
        let server_task = tokio::spawn(server);
        let model = MfModel::new(cfg.model.clone(), autodiff_device(cfg.compute.backend)?)?;
        let trainer = OnlineTrainer::new(
            cfg.trainer.clone(),
            model,
            writer,
            Arc::new(CatalogSink(catalog.clone())),
        )?;
        let stats = trainer.stats();
        let cancel = CancellationToken::new();
        let trainer_task = tokio::spawn(trainer.run(cancel.clone()));
        Ok(Self {
            addr,
            catalog,
            stats,
            started: Instant::now(),
            cancel,
            trainer: Some(trainer_task),
            server: server_handle,
            server_task,
        })
    }

    /// Messages the trainer has dealt with: trained, rejected or in a skipped batch.
    pub fn messages_done(&self) -> u64 {
        self.stats.events_trained.load(Ordering::Relaxed)
            + self.stats.events_rejected.load(Ordering::Relaxed)
            + self.stats.events_skipped.load(Ordering::Relaxed)
    }

    /// Waits until `messages` have been dealt with; errors if the trainer dies or
    /// `timeout` passes. Returns the seconds since the pipeline started.
    pub async fn wait_for(&mut self, messages: u64, timeout: Duration) -> anyhow::Result<f64> {
        let deadline = Instant::now() + timeout;
        while self.messages_done() < messages {
            if self.trainer.as_ref().is_some_and(JoinHandle::is_finished) {
                let result = self.trainer.take().context("trainer")?.await;
                bail!("trainer stopped early: {result:?}");
            }
            if Instant::now() > deadline {
                bail!(
                    "trainer dealt with {} of {messages} messages in {timeout:?}",
                    self.messages_done()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(self.started.elapsed().as_secs_f64())
    }

    /// Stops the trainer (it trains what it buffered and publishes) and returns its model;
    /// the server keeps answering.
    pub async fn stop_trainer(&mut self) -> anyhow::Result<MfModel> {
        self.cancel.cancel();
        let task = self.trainer.take().context("trainer already stopped")?;
        Ok(task.await.context("trainer task")??)
    }

    /// Waits for Ctrl-C, or for the trainer or the server to stop on their own.
    pub async fn run_until_signal(&mut self) -> anyhow::Result<()> {
        let trainer = self.trainer.as_mut().context("trainer already stopped")?;
        tokio::select! {
            signal = tokio::signal::ctrl_c() => signal?,
            result = trainer => {
                self.trainer = None;
                result.context("trainer task")??;
                bail!("trainer stopped");
            }
        }
        Ok(())
    }

    /// Stops everything gracefully.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if self.trainer.is_some() {
            self.stop_trainer().await?;
        }
        self.server.stop(true).await;
        self.server_task.await??;
        Ok(())
    }
}
