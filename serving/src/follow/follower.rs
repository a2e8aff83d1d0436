//! The item follower: the newest valid base snapshot of its generation, then the
//! item-vector, popular and item topics from the offsets the snapshot covers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use recsys_index::generations;
use recsys_index::ids::IdMap;
use recsys_schemas::KafkaConfig;

use super::config::FollowConfig;
use super::status::FollowStatus;
use crate::catalog::CatalogHolder;
use crate::{Result, ServingError};

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Per followed (topic, partition): the first offset read and the watermark to reach.
pub(super) type Followed = BTreeMap<(String, i32), (i64, i64)>;

pub struct ItemFollower {
    pub(super) cfg: FollowConfig,
    /// The `[kafka]` table.
    pub(super) kafka: KafkaConfig,
    pub(super) generation: u64,
    pub(super) catalog: Arc<CatalogHolder>,
    pub(super) status: Arc<FollowStatus>,
}

impl ItemFollower {
    pub fn new(
        cfg: FollowConfig,
        kafka: KafkaConfig,
        generation: u64,
        catalog: Arc<CatalogHolder>,
    ) -> Result<Self> {
        cfg.validate()?;
        if cfg.brokers.trim().is_empty() {
            return Err(ServingError::Config(
                "serving.follow.brokers: must be set".into(),
            ));
        }
        // With a models directory, the current generation is served from the start.
        let mut generation = generation;
        if !cfg.models_dir.is_empty() {
            let models = Path::new(&cfg.models_dir);
            match generations::current(models) {
                Ok(Some(c)) => generation = c.generation,
                Ok(None) => {}
                Err(e) => {
                    return Err(ServingError::Config(format!(
                        "serving.follow.models_dir: {e}"
                    )));
                }
            }
            if catalog.load().generation != generation {
                catalog.switch(generation, IdMap::new(), None);
            }
        }
        Ok(Self {
            cfg,
            kafka,
            generation,
            catalog,
            status: Arc::new(FollowStatus {
                snapshot_seq: AtomicI64::new(-1),
                last_delay_ms: AtomicI64::new(-1),
                ..FollowStatus::default()
            }),
        })
    }

    pub fn status(&self) -> Arc<FollowStatus> {
        self.status.clone()
    }

    /// Where this generation's base snapshots are.
    pub(super) fn snapshot_dir(&self) -> Option<PathBuf> {
        if !self.cfg.models_dir.is_empty() {
            Some(generations::snapshot_dir(
                Path::new(&self.cfg.models_dir),
                self.generation,
            ))
        } else if !self.cfg.snapshot_dir.is_empty() {
            Some(PathBuf::from(&self.cfg.snapshot_dir))
        } else {
            None
        }
    }
}
