//! Following a flip of `models/CURRENT`: the new generation's snapshot loaded, then ids,
//! index and generation swapped in one step.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::Offset;
use rdkafka::consumer::{Consumer, StreamConsumer};
use recsys_index::{generations, snapshot};
use tracing::{debug, error, info, warn};

use super::follower::ItemFollower;
use crate::{Result, ServingError};

impl ItemFollower {
    /// The generation `models/CURRENT` points at when it is not the one served (and not
    /// one already found incomplete).
    pub(super) fn generation_to_follow(&self, waiting_for: &mut Option<u64>) -> Option<u64> {
        match generations::current(Path::new(&self.cfg.models_dir)) {
            Ok(Some(c))
                if c.generation != self.generation && *waiting_for != Some(c.generation) =>
            {
                Some(c.generation)
            }
            Ok(_) => None,
            Err(e) => {
                debug!(error = %e, "cannot read the generation pointer; will retry");
                None
            }
        }
    }

    /// Switches the catalog to generation `to` once its base snapshot loads: index, ids
    /// and generation (hence the user-key prefix) change in one swap. The item-vector
    /// partitions are then re-read from the snapshot's offsets (the beginning where it
    /// has none), keeping that generation's messages; item metadata and the popular list
    /// continue where they were. A generation without a loadable snapshot is not switched to: the replica
    /// keeps serving the old one and retries when `CURRENT` changes again.
    pub(super) async fn switch(
        &mut self,
        to: u64,
        consumer: &Arc<StreamConsumer>,
        waiting_for: &mut Option<u64>,
    ) -> Result<()> {
        let dir = generations::snapshot_dir(Path::new(&self.cfg.models_dir), to);
        let index_cfg = self.catalog.index_config().clone();
        let loaded =
            tokio::task::spawn_blocking(move || snapshot::load_latest(&dir, to, None, &index_cfg))
                .await
                .map_err(|e| ServingError::Internal(format!("snapshot task: {e}")))?;
        let snap = match loaded {
            Ok(Some(snap)) => snap,
            Ok(None) => {
                warn!(
                    generation = to,
                    serving = self.generation,
                    "CURRENT points at a generation without a base snapshot; not switching"
                );
                *waiting_for = Some(to);
                return Ok(());
            }
            Err(e) => {
                warn!(generation = to, error = %e, "cannot list the new generation's snapshots; not switching");
                *waiting_for = Some(to);
                return Ok(());
            }
        };
        let from = self.generation;
        let start = snap.manifest.offsets.clone();
        self.status
            .snapshot_seq
            .store(snap.manifest.seq as i64, Ordering::Relaxed);
        self.catalog.switch(to, snap.ids, Some(snap.index));
        self.status.dropped.store(0, Ordering::Relaxed);
        self.generation = to;
        *waiting_for = None;
        self.status
            .generation_switches
            .fetch_add(1, Ordering::Relaxed);
        // Seek rather than re-assign: item metadata and the popular list keep their
        // positions, and librdkafka need not stop and restart every partition.
        let topic = self.cfg.item_vectors_topic.clone();
        let partitions: Vec<i32> = consumer
            .assignment()
            .map_err(|e| ServingError::Internal(format!("kafka: {e}")))?
            .elements_for_topic(&topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        for p in partitions {
            let offset = start
                .get(&p)
                .map_or(Offset::Beginning, |&o| Offset::Offset(o));
            let mut attempt = 0;
            while let Err(e) = consumer.seek(&topic, p, offset, Duration::from_secs(5)) {
                attempt += 1;
                if attempt == 5 {
                    error!(partition = p, error = %e, "cannot re-read the item-vector partition; the new generation's earlier vectors stay missing until they change again");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        info!(
            from,
            to,
            items = snap.manifest.item_count,
            ?start,
            "switched generation"
        );
        Ok(())
    }
}
