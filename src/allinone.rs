//! The all-in-one wiring: trainer and server in one process, joined the way separate
//! processes are: item vectors and the popular list go through the `item-vectors` and
//! `item-popularity` topics (and base snapshots, when `trainer.snapshot_dir` is set) to
//! the serving catalog's follower; user vectors go through a store, in memory or Redis.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use anyhow::{Context, bail};
use recsys_engine::device::autodiff_device;
use recsys_engine::model::Model;
use recsys_index::store::MemoryUserStore;
use recsys_serving::{
    AppState, CatalogHolder, FollowStatus, ItemFollower, KafkaEventSink, UserVectorStore,
};
use recsys_trainer::sink::{KafkaItemVectorSink, MemoryUserVectorSink, UserVectorSink};
use recsys_trainer::{OnlineTrainer, Result, TrainerStats};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Every topic the pipeline uses, with partition counts, for an embedded broker.
pub fn topics(cfg: &Config, event_partitions: i32) -> Vec<(String, i32)> {
    vec![
        (cfg.trainer.topic.clone(), event_partitions),
        (cfg.trainer.dead_letter_topic.clone(), 1),
        (cfg.trainer.items_topic.clone(), 1),
        (cfg.trainer.item_vectors_topic.clone(), 4),
        (cfg.trainer.popular_topic.clone(), 1),
    ]
}

/// The online trainer as `cfg` describes it: a fresh model, user vectors to `writer`,
/// item vectors and popularity to the item-vector topics.
pub fn online_trainer(
    cfg: &Config,
    writer: Arc<dyn UserVectorSink>,
) -> anyhow::Result<OnlineTrainer> {
    let model = Model::new(&cfg.model, autodiff_device(cfg.compute.backend)?)?;
    let items = KafkaItemVectorSink::new(
        &cfg.kafka,
        &cfg.trainer.brokers,
        &cfg.trainer.item_vectors_topic,
        &cfg.trainer.popular_topic,
    )?;
    let trainer = OnlineTrainer::new(
        cfg.trainer.clone(),
        cfg.kafka.clone(),
        model,
        writer,
        Arc::new(items),
    )?;
    Ok(trainer
        .with_index_config(cfg.index.clone())
        .with_event_limits(cfg.events))
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
    pub follow: Arc<FollowStatus>,
    started: Instant,
    cancel: CancellationToken,
    trainer: Option<JoinHandle<Result<Model>>>,
    follow_cancel: CancellationToken,
    follower: JoinHandle<recsys_serving::Result<()>>,
    server: ServerHandle,
    server_task: JoinHandle<std::io::Result<()>>,
}

impl Pipeline {
    /// Starts the server on `cfg.serving.bind`, the item follower and the trainer on
    /// `cfg.trainer.brokers` (and `serving.follow.brokers` when set).
    pub fn start(
        cfg: &Config,
        writer: Arc<dyn UserVectorSink>,
        reader: Arc<dyn UserVectorStore>,
    ) -> anyhow::Result<Self> {
        let catalog = Arc::new(CatalogHolder::new(
            cfg.serving.generation,
            cfg.index.clone(),
        ));
        let mut follow_cfg = cfg.serving.follow.clone();
        if follow_cfg.brokers.is_empty() {
            follow_cfg.brokers = cfg.trainer.brokers.clone();
        }
        if follow_cfg.snapshot_dir.is_empty() {
            follow_cfg.snapshot_dir = cfg.trainer.snapshot_dir.clone();
        }
        if follow_cfg.models_dir.is_empty() {
            follow_cfg.models_dir = cfg.trainer.models_dir.clone();
        }
        let follower = ItemFollower::new(
            follow_cfg,
            cfg.kafka.clone(),
            cfg.serving.generation,
            catalog.clone(),
        )?;
        let follow = follower.status();
        let follow_cancel = CancellationToken::new();
        let follower = tokio::spawn(follower.run(follow_cancel.clone()));

        let events =
            KafkaEventSink::new(&cfg.kafka, &cfg.trainer.brokers, &cfg.serving.events_topic)
                .map_err(anyhow::Error::msg)?;
        let trainer = online_trainer(cfg, writer)?;
        let stats = trainer.stats();
        let probe = Arc::new(crate::admin::TrainerProbe(stats.clone()));
        let state = AppState::new(catalog.clone(), reader, cfg.serving.clone(), follow.clone())?
            .with_events(Arc::new(events))
            .with_event_limits(cfg.events)
            .with_companion(probe);
        let (server, addr) = recsys_serving::start(state)
            .with_context(|| format!("serving.bind: cannot listen on {}", cfg.serving.bind))?;
        let server_handle = server.handle();
        let server_task = tokio::spawn(server);
        let cancel = CancellationToken::new();
        let trainer_task = tokio::spawn(trainer.run(cancel.clone()));
        Ok(Self {
            addr,
            catalog,
            stats,
            follow,
            started: Instant::now(),
            cancel,
            trainer: Some(trainer_task),
            follow_cancel,
            follower,
            server: server_handle,
            server_task,
        })
    }

    /// Waits until the serving catalog holds every item of `model` with exactly the
    /// model's vector, and a popular list (both have come through their topics), or
    /// `timeout` passes.
    pub async fn wait_for_catalog(&self, model: &Model, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let items = model.item_ids();
        let rows: Vec<u32> = (0..items.len() as u32).collect();
        let vectors = model.item_vectors(&rows)?;
        let d = model.dim();
        let current = |c: &recsys_serving::Catalog| -> usize {
            let Some(index) = c.index.as_ref() else {
                return 0;
            };
            (0..items.len() as u32)
                .filter(|&row| {
                    let got = items
                        .id(row)
                        .and_then(|id| c.ids.get(id))
                        .and_then(|r| index.vector(u64::from(r)));
                    let r = row as usize;
                    got == Some(&vectors[r * d..(r + 1) * d])
                })
                .count()
        };
        loop {
            let c = self.catalog.load();
            let done = current(&c);
            if done == items.len() && !c.popular.is_empty() {
                return Ok(());
            }
            if self.follower.is_finished() {
                bail!("the item follower stopped");
            }
            if Instant::now() > deadline {
                bail!(
                    "serving catalog holds {done} of {} item vectors as trained after {timeout:?}",
                    items.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Messages the trainer has dealt with: trained, rejected or in a skipped batch.
    pub fn messages_done(&self) -> u64 {
        self.stats.messages_done()
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
    pub async fn stop_trainer(&mut self) -> anyhow::Result<Model> {
        self.cancel.cancel();
        let task = self.trainer.take().context("trainer already stopped")?;
        Ok(task.await.context("trainer task")??)
    }

    /// Waits for Ctrl-C or SIGTERM, or for the trainer to stop on its own.
    pub async fn run_until_signal(&mut self) -> anyhow::Result<()> {
        let trainer = self.trainer.as_mut().context("trainer already stopped")?;
        tokio::select! {
            signal = recsys_serving::replica::shutdown_signal() => signal?,
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
        self.follow_cancel.cancel();
        self.follower.await??;
        Ok(())
    }
}
