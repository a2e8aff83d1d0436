//! Generations: evolving the current one of the models directory, and following a flip
//! of `models/CURRENT` (warm start from the new generation's checkpoint, replay of the
//! events after its offsets, every vector republished).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::Offset;
use rdkafka::consumer::{Consumer, StreamConsumer};
use recsys_index::generations;
use recsys_schemas::Event;
use tracing::{debug, info, warn};

use super::learner::Dirty;
use super::progress::ResumeContext;
use super::trainer::{OnlineTrainer, SnapshotTask};
use crate::{Result, TrainerError};

impl OnlineTrainer {
    /// With `trainer.models_dir`: evolve the current generation (making
    /// `trainer.generation` current if nothing is), with checkpoints and snapshots in its
    /// directory.
    pub(super) fn enter_models_dir(&mut self) -> Result<()> {
        if self.cfg.models_dir.is_empty() {
            self.stats
                .generation
                .store(self.cfg.generation, Ordering::Relaxed);
            return Ok(());
        }
        let models = PathBuf::from(&self.cfg.models_dir);
        let c = generations::init_current(&models, self.cfg.generation)
            .map_err(|e| TrainerError::Config(format!("trainer.models_dir: {e}")))?;
        self.set_generation(c.generation);
        info!(models = %models.display(), generation = c.generation, "evolving the current generation");
        Ok(())
    }

    fn set_generation(&mut self, g: u64) {
        let models = PathBuf::from(&self.cfg.models_dir);
        self.cfg.generation = g;
        self.cfg.checkpoint_dir = generations::generation_dir(&models, g)
            .to_string_lossy()
            .into_owned();
        self.cfg.snapshot_dir = generations::snapshot_dir(&models, g)
            .to_string_lossy()
            .into_owned();
        self.stats.generation.store(g, Ordering::Relaxed);
    }

    /// Follows a flip of `models/CURRENT`: leaves the old generation complete (batch
    /// trained, checkpoint, vectors published), warm-starts from the new generation's
    /// newest checkpoint, seeks every assigned events partition to that checkpoint's
    /// offsets (the retrain's cutoff), so the events between cutoff and switch are
    /// replayed into it, and republishes every vector under the new generation. Returns
    /// whether it switched.
    pub(super) async fn follow_current(
        &mut self,
        consumer: &StreamConsumer<ResumeContext>,
        batch: &mut Vec<Event>,
        snapshot: &mut Option<SnapshotTask>,
        refused: &mut Option<u64>,
    ) -> Result<bool> {
        let models = PathBuf::from(&self.cfg.models_dir);
        let to = match generations::current(&models) {
            Ok(Some(c)) if c.generation != self.cfg.generation => c.generation,
            Ok(_) => {
                *refused = None;
                return Ok(false);
            }
            Err(e) => {
                debug!(error = %e, "cannot read the generation pointer; will retry");
                return Ok(false);
            }
        };
        if *refused == Some(to) {
            return Ok(false);
        }
        let loaded = self
            .load_checkpoint(generations::generation_dir(&models, to))
            .await?;
        let (model, meta, path) = match loaded {
            Ok(Some(found)) if found.1.generation == to => found,
            other => {
                warn!(
                    generation = to,
                    staying_on = self.cfg.generation,
                    found = ?other.map(|o| o.map(|x| x.1.generation)),
                    "CURRENT points at a generation without a loadable checkpoint of its own; not switching"
                );
                *refused = Some(to);
                return Ok(false);
            }
        };
        // The old generation stays complete and resumable: a rollback returns to it.
        if !batch.is_empty() {
            self.train(std::mem::take(batch)).await?;
        }
        self.checkpoint(consumer).await?;
        self.publish().await;
        if let Some(running) = snapshot.take() {
            self.snapshot_finished(running).await;
        }
        let from = self.cfg.generation;
        {
            let learner = self.learner_mut()?;
            let old = &learner.model;
            // Popularity is per item row: carry it over to the new model's rows.
            learner.popularity = learner.popularity.remap(|row| {
                old.item_ids()
                    .id(row)
                    .and_then(|id| model.item_ids().get(id))
            });
        }
        self.set_generation(to);
        self.adopt(model, &meta, &path)?;
        // Every vector goes out again under the new generation: an in-process user store
        // never got the retrain's, and a rolled-back generation's keys may have expired.
        let learner = self.learner_mut()?;
        let hidden = std::mem::take(&mut learner.dirty.hidden);
        learner.dirty = Dirty {
            hidden,
            ..Dirty::default()
        };
        let users = learner.model.user_ids();
        let items = learner.model.item_ids();
        learner.dirty.users = (0..users.len() as u32)
            .filter(|&r| users.id(r).is_some())
            .collect();
        learner.dirty.items = (0..items.len() as u32)
            .filter(|&r| items.id(r).is_some())
            .collect();
        self.seek_to_model(consumer)?;
        self.checkpoint(consumer).await?;
        self.stats
            .generation_switches
            .fetch_add(1, Ordering::Relaxed);
        info!(
            from,
            to,
            offsets = ?self.progress.next,
            "switched generation: warm-started from its checkpoint, replaying the events after its offsets"
        );
        Ok(true)
    }

    /// Moves every assigned events partition to the model's position; partitions the
    /// model has no offset for start at their beginning.
    fn seek_to_model(&mut self, consumer: &StreamConsumer<ResumeContext>) -> Result<()> {
        let topic = self.cfg.topic.clone();
        let assigned = consumer.assignment()?;
        let timeout = Duration::from_secs(5);
        for elem in assigned.elements_for_topic(&topic) {
            let p = elem.partition();
            let offset = match self.progress.next.get(&p) {
                Some(&o) => o,
                None => {
                    let (low, _) = consumer.fetch_watermarks(&topic, p, timeout)?;
                    self.progress.next.insert(p, low);
                    low
                }
            };
            self.progress
                .resume
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(p, offset);
            consumer.seek(&topic, p, Offset::Offset(offset), timeout)?;
        }
        Ok(())
    }
}
