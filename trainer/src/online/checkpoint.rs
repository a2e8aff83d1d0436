//! Checkpoints: the model with its stream position, written atomically on a blocking
//! thread; restoring from the newest one; Kafka's committed offsets follow them.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use recsys_engine::checkpoint::{self, CheckpointMeta};
use recsys_engine::model::Model;
use tracing::{debug, info, warn};

use super::progress::{ResumeContext, key, of_topic};
use super::trainer::OnlineTrainer;
use crate::{Result, TrainerError};

impl OnlineTrainer {
    /// Replaces the model and the stream position with the newest valid checkpoint, if
    /// `checkpoint_dir` holds one.
    pub(super) async fn restore(&mut self) -> Result<()> {
        if self.cfg.checkpoint_dir.is_empty() {
            return Ok(());
        }
        let loaded = self
            .load_checkpoint(PathBuf::from(&self.cfg.checkpoint_dir))
            .await??;
        let Some((model, meta, path)) = loaded else {
            info!(dir = %self.cfg.checkpoint_dir, "no checkpoint; starting from the group's offsets");
            return Ok(());
        };
        if meta.generation != self.cfg.generation {
            return Err(TrainerError::Config(format!(
                "trainer.generation: {} but the newest checkpoint ({}) is of generation {}",
                self.cfg.generation,
                path.display(),
                meta.generation
            )));
        }
        self.adopt(model, &meta, &path)
    }

    /// The newest valid checkpoint in `dir`, loaded on a blocking thread onto the
    /// model's device. The outer error is the task's, the inner one the load's.
    pub(super) async fn load_checkpoint(
        &self,
        dir: PathBuf,
    ) -> Result<recsys_engine::Result<Option<(Model, CheckpointMeta, PathBuf)>>> {
        let device = self.learner()?.model.device().clone();
        tokio::task::spawn_blocking(move || checkpoint::load_latest(&dir, &device))
            .await
            .map_err(|e| TrainerError::Task(e.to_string()))
    }

    /// Takes `model` and the stream position of its checkpoint `meta`.
    pub(super) fn adopt(
        &mut self,
        model: Model,
        meta: &CheckpointMeta,
        path: &std::path::Path,
    ) -> Result<()> {
        let t = &self.cfg.topic;
        self.progress.next = of_topic(&meta.offsets, t);
        self.progress.applied = of_topic(&meta.applied, t);
        self.progress.dead_lettered = of_topic(&meta.dead_lettered, t);
        self.progress.skipped = of_topic(&meta.skipped, t);
        *self
            .progress
            .resume
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = self.progress.next.clone();
        info!(
            path = %path.display(),
            users = model.user_ids().len(),
            items = model.item_ids().len(),
            offsets = ?self.progress.next,
            "restored from checkpoint"
        );
        self.learner_mut()?.model = model;
        Ok(())
    }

    /// Writes a checkpoint of the model and its stream position (call with no events
    /// waiting in a batch), then lets Kafka's committed offsets follow it. A failed write
    /// is logged, counted and retried at the next interval.
    pub(super) async fn checkpoint(
        &mut self,
        consumer: &StreamConsumer<ResumeContext>,
    ) -> Result<()> {
        let learner = self
            .learner
            .take()
            .ok_or_else(|| TrainerError::Task("model lost".into()))?;
        let t = &self.cfg.topic;
        let meta = CheckpointMeta {
            generation: self.cfg.generation,
            offsets: self
                .progress
                .next
                .iter()
                .map(|(&p, &o)| (key(t, p), o))
                .collect(),
            applied: self
                .progress
                .applied
                .iter()
                .map(|(&p, &n)| (key(t, p), n))
                .collect(),
            dead_lettered: self
                .progress
                .dead_lettered
                .iter()
                .map(|(&p, &n)| (key(t, p), n))
                .collect(),
            skipped: self
                .progress
                .skipped
                .iter()
                .map(|(&p, &n)| (key(t, p), n))
                .collect(),
            created_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        };
        let dir = PathBuf::from(&self.cfg.checkpoint_dir);
        let keep = self.cfg.checkpoint_keep;
        let meta2 = meta.clone();
        let (learner, written) = tokio::task::spawn_blocking(move || {
            let r = checkpoint::write(&dir, &learner.model, &meta2, keep);
            (learner, r)
        })
        .await
        .map_err(|e| TrainerError::Task(format!("checkpoint task: {e}")))?;
        self.learner = Some(learner);
        match written {
            Ok(path) => {
                self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                self.stats.health.checkpointed(true);
                debug!(path = %path.display(), "checkpoint written");
                let mut tpl = TopicPartitionList::new();
                for (&p, &o) in &self.progress.next {
                    let _ = tpl.add_partition_offset(t, p, Offset::Offset(o));
                }
                if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                    warn!(error = %e, "could not commit the checkpointed offsets");
                }
            }
            Err(e) => {
                self.stats.checkpoint_errors.fetch_add(1, Ordering::Relaxed);
                self.stats.health.checkpointed(false);
                warn!(error = %e, "checkpoint failed; will retry");
            }
        }
        Ok(())
    }
}
