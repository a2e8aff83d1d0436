//! Publishing a generation: everything written before anything points at it.

use std::collections::BTreeMap;

use recsys_engine::checkpoint::{self, CheckpointMeta};
use recsys_engine::model::Model;
use recsys_index::ItemIndex;
use recsys_index::generations::{self, generation_dir};
use recsys_index::snapshot;

use super::types::RetrainOptions;
use crate::sink::{UserUpdate, UserVectorSink};
use crate::{Result, TrainerError};

/// Users per user-vector write while publishing (bounds the memory it takes).
const USER_CHUNK: usize = 10_000;

/// Runs `f` to completion from this (blocking, non-async) thread: on the caller's runtime
/// when there is one, else on a small one made for it.
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => Ok(h.block_on(f)),
        Err(_) => Ok(tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TrainerError::Task(format!("a runtime to publish on: {e}")))?
            .block_on(f)),
    }
}

/// Writes generation `g` completely before anything points at it: the checkpoint (with
/// the archive cutoff as its offsets), a base index snapshot built from scratch
/// (quantizers trained on the new vectors), and every user's vector under the new
/// generation's keys when a user store is given. Returns the users written.
pub(super) fn publish(
    opts: &RetrainOptions,
    users: Option<&dyn UserVectorSink>,
    model: &Model,
    g: u64,
    cutoff: &BTreeMap<i32, i64>,
) -> Result<usize> {
    let dir = generation_dir(&opts.models, g);
    let meta = CheckpointMeta {
        generation: g,
        offsets: cutoff
            .iter()
            .map(|(p, o)| (format!("{}/{p}", opts.topic), *o))
            .collect(),
        created_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        ..CheckpointMeta::default()
    };
    checkpoint::write(&dir, model, &meta, 1)?;
    let ids = model.item_ids().clone();
    let rows: Vec<u32> = (0..ids.len() as u32)
        .filter(|&r| ids.id(r).is_some())
        .collect();
    if !rows.is_empty() {
        let vectors = model.item_vectors(&rows)?;
        let keys: Vec<u64> = rows.iter().map(|&r| u64::from(r)).collect();
        let index = ItemIndex::build(model.dim(), &opts.index, &keys, &vectors)?;
        snapshot::write(
            &generations::snapshot_dir(&opts.models, g),
            g,
            &ids,
            &index,
            &BTreeMap::new(),
            1,
        )?;
    }
    let Some(sink) = users else {
        return Ok(0);
    };
    let user_ids = model.user_ids();
    let live: Vec<u32> = (0..user_ids.len() as u32)
        .filter(|&r| user_ids.id(r).is_some())
        .collect();
    let d = model.dim();
    for rows in live.chunks(USER_CHUNK) {
        let vectors = model.user_vectors(rows)?;
        let updates: Vec<UserUpdate> = rows
            .iter()
            .zip(vectors.chunks_exact(d))
            .filter_map(|(&r, v)| {
                Some(UserUpdate {
                    user_id: user_ids.id(r)?.to_owned(),
                    vector: v.to_vec(),
                    new_items: Vec::new(),
                })
            })
            .collect();
        block_on(sink.publish(g, &updates))?.map_err(|e| {
            TrainerError::Store(format!("writing the user vectors of generation {g}: {e}"))
        })?;
    }
    Ok(live.len())
}
