//! Base index snapshots of every item vector, built and written on a blocking thread
//! while training goes on.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use recsys_index::{ItemIndex, snapshot};
use tracing::{info, warn};

use super::trainer::{OnlineTrainer, SnapshotTask};

impl OnlineTrainer {
    /// Starts writing a base index snapshot of every item vector, if `snapshot_dir` is
    /// set. Changed vectors are published first, so the snapshot's offsets (the ends of
    /// the item-vector partitions) cover everything it holds; the index is built and
    /// written on a blocking thread while training goes on.
    pub(super) async fn start_snapshot(&mut self) -> Option<SnapshotTask> {
        if self.cfg.snapshot_dir.is_empty() {
            return None;
        }
        self.publish().await;
        if !self.learner.as_ref()?.dirty.items.is_empty() {
            warn!("item vectors not published; snapshot postponed");
            return None;
        }
        let offsets = match self.items.end_offsets().await {
            Ok(o) => o,
            Err(e) => {
                self.stats.snapshot_errors.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "cannot read the item-vector offsets; snapshot postponed");
                return None;
            }
        };
        let learner = self.learner.as_ref()?;
        let model = &learner.model;
        let ids = model.item_ids().clone();
        if ids.is_empty() {
            return None;
        }
        let dim = model.dim();
        let hidden = learner.hidden_rows();
        // Free rows (expired ids) hold no item.
        let live: Vec<u32> = (0..ids.len() as u32)
            .filter(|r| !hidden.contains(r) && ids.id(*r).is_some())
            .collect();
        let rows: Vec<u64> = live.iter().map(|&r| u64::from(r)).collect();
        let vectors = match model.item_vectors(&live) {
            Ok(v) => v,
            Err(e) => {
                self.stats.snapshot_errors.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "cannot compute item vectors; snapshot postponed");
                return None;
            }
        };
        let dir = PathBuf::from(&self.cfg.snapshot_dir);
        let (generation, keep) = (self.cfg.generation, self.cfg.snapshot_keep);
        let index_cfg = self.index_cfg.clone();
        Some(tokio::task::spawn_blocking(move || {
            let index = ItemIndex::build(dim, &index_cfg, &rows, &vectors)?;
            Ok(snapshot::write(
                &dir, generation, &ids, &index, &offsets, keep,
            )?)
        }))
    }

    pub(super) async fn snapshot_finished(&self, task: SnapshotTask) {
        match task.await {
            Ok(Ok(path)) => {
                self.stats.snapshots.fetch_add(1, Ordering::Relaxed);
                info!(path = %path.display(), "index snapshot written");
            }
            Ok(Err(e)) => {
                self.stats.snapshot_errors.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "index snapshot failed");
            }
            Err(e) => {
                self.stats.snapshot_errors.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "index snapshot task failed");
            }
        }
    }
}
