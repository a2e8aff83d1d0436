//! Trainer checkpoints: the whole model state (id maps, tables, Adagrad state, the logQ
//! frequency estimate, the config; for the two-tower model also the category table, user
//! histories, item features, the MLP weights and Adam's state) together with the stream position it reflects (next
//! offset per partition, and how many events of each partition were applied and
//! dead-lettered), in one file written atomically: temporary file, fsync, rename,
//! directory fsync. The newest `keep` are kept. A restored model continues bit-exactly.
//!
//! Layout of `ckpt-{seq:012}.bin`: the magic `RSCKPT01`, a little-endian `u64` length and
//! that many bytes of JSON header ([`CheckpointMeta`] and the model config and sizes),
//! the ids (`u32` length + UTF-8 each), the `f32` tables and accumulators and the `f64`
//! counts, all little-endian, then a CRC-32 of everything before it.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::loss::ItemFrequency;
use crate::mf::{MfConfig, MfModel, MfParts};
use crate::model::{Model, ModelKind};
use crate::table::TableParts;
use crate::two_tower::{MAX_CATEGORIES, TwoTowerConfig, TwoTowerModel, TwoTowerParts};
use crate::{EngineError, Result};
use recsys_index::bytes::Reader;

const MAGIC: &[u8; 8] = b"RSCKPT01";

/// Where the stream stood when the checkpoint was taken.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub generation: u64,
    /// `"topic/partition"` → the first offset *not* reflected in the model.
    pub offsets: BTreeMap<String, i64>,
    /// `"topic/partition"` → events of that partition applied to the model.
    pub applied: BTreeMap<String, u64>,
    /// `"topic/partition"` → messages of that partition sent to the dead-letter topic.
    pub dead_lettered: BTreeMap<String, u64>,
    /// `"topic/partition"` → events in batches skipped for a non-finite loss.
    #[serde(default)]
    pub skipped: BTreeMap<String, u64>,
    pub created_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    meta: CheckpointMeta,
    #[serde(default)]
    kind: ModelKind,
    /// MF's settings (the defaults for a two-tower checkpoint).
    cfg: MfConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tower: Option<TowerHeader>,
    users: usize,
    items: usize,
    user_seed: u64,
    item_seed: u64,
    user_init: f32,
    item_init: f32,
    counts: usize,
    total_count: f64,
    #[serde(default)]
    steps: u64,
}

/// What a two-tower checkpoint adds: its config, the category table and the sizes of
/// the MLP tensors and the optimizer state.
#[derive(Debug, Serialize, Deserialize)]
struct TowerHeader {
    cfg: TwoTowerConfig,
    categories: usize,
    category_seed: u64,
    category_init: f32,
    dense: Vec<usize>,
    optimizer: usize,
}

fn io(path: &Path, e: std::io::Error) -> EngineError {
    EngineError::Snapshot(format!("{}: {e}", path.display()))
}

fn bad(path: &Path, why: impl std::fmt::Display) -> EngineError {
    EngineError::Snapshot(format!("{}: {why}", path.display()))
}

fn name(seq: u64) -> String {
    format!("ckpt-{seq:012}.bin")
}

/// Complete checkpoints under `dir`, newest first, as `(seq, path)`.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io(dir, e))?;
        let file = entry.file_name();
        let Some(seq) = file
            .to_str()
            .and_then(|n| n.strip_prefix("ckpt-"))
            .and_then(|n| n.strip_suffix(".bin"))
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        out.push((seq, entry.path()));
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.0));
    Ok(out)
}

fn put_ids(out: &mut Vec<u8>, ids: &[String]) {
    for id in ids {
        out.extend_from_slice(&(id.len() as u32).to_le_bytes());
        out.extend_from_slice(id.as_bytes());
    }
}

fn put_f32(out: &mut Vec<u8>, xs: &[f32]) {
    for x in xs {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

fn put_table(out: &mut Vec<u8>, t: &TableParts) {
    put_f32(out, &t.data);
    put_f32(out, &t.accum);
}

/// Serialises a model: the JSON header, then the ids, tables and counts.
fn encode(model: &Model, meta: &CheckpointMeta) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut body = Vec::new();
    let header = match model {
        Model::Mf(m) => {
            let p = m.to_parts();
            put_ids(&mut body, &p.user_ids);
            put_ids(&mut body, &p.item_ids);
            put_table(&mut body, &p.users);
            put_table(&mut body, &p.items);
            for c in &p.item_counts {
                body.extend_from_slice(&c.to_le_bytes());
            }
            put_seen(&mut body, &p.user_seen, &p.item_seen);
            Header {
                meta: meta.clone(),
                kind: ModelKind::Mf,
                cfg: p.cfg.clone(),
                tower: None,
                users: p.user_ids.len(),
                items: p.item_ids.len(),
                user_seed: p.users.seed,
                item_seed: p.items.seed,
                user_init: p.users.init_scale,
                item_init: p.items.init_scale,
                counts: p.item_counts.len(),
                total_count: p.total_count,
                steps: p.steps,
            }
        }
        Model::TwoTower(m) => {
            let p = m.to_parts()?;
            put_ids(&mut body, &p.user_ids);
            put_ids(&mut body, &p.item_ids);
            put_ids(&mut body, &p.category_ids);
            put_table(&mut body, &p.users);
            put_table(&mut body, &p.items);
            put_table(&mut body, &p.categories);
            for x in p.history.iter().chain(&p.item_categories) {
                body.extend_from_slice(&x.to_le_bytes());
            }
            body.extend_from_slice(&p.history_next);
            for t in &p.dense {
                put_f32(&mut body, t);
            }
            body.extend_from_slice(&p.optimizer);
            for c in &p.freq.counts {
                body.extend_from_slice(&c.to_le_bytes());
            }
            put_seen(&mut body, &p.user_seen, &p.item_seen);
            Header {
                meta: meta.clone(),
                kind: ModelKind::TwoTower,
                cfg: MfConfig::default(),
                tower: Some(TowerHeader {
                    cfg: p.cfg.clone(),
                    categories: p.category_ids.len(),
                    category_seed: p.categories.seed,
                    category_init: p.categories.init_scale,
                    dense: p.dense.iter().map(Vec::len).collect(),
                    optimizer: p.optimizer.len(),
                }),
                users: p.user_ids.len(),
                items: p.item_ids.len(),
                user_seed: p.users.seed,
                item_seed: p.items.seed,
                user_init: p.users.init_scale,
                item_init: p.items.init_scale,
                counts: p.freq.counts.len(),
                total_count: p.freq.total,
                steps: p.steps,
            }
        }
    };
    let json = serde_json::to_vec(&header)
        .map_err(|e| EngineError::Snapshot(format!("checkpoint header: {e}")))?;
    out.reserve(64 + json.len() + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Writes a checkpoint of `model` at `meta` into `dir` and keeps the newest `keep`.
pub fn write(dir: &Path, model: &Model, meta: &CheckpointMeta, keep: usize) -> Result<PathBuf> {
    fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let out = encode(model, meta)?;
    let seq = list(dir)?.first().map_or(0, |s| s.0 + 1);
    let tmp = dir.join(format!("{}.tmp", name(seq)));
    let dest = dir.join(name(seq));
    let mut f = File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(&out)
        .and_then(|()| f.sync_all())
        .map_err(|e| io(&tmp, e))?;
    drop(f);
    fs::rename(&tmp, &dest).map_err(|e| io(&dest, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))?;
    for (_, old) in list(dir)?.into_iter().skip(keep.max(1)) {
        if let Err(e) = fs::remove_file(&old) {
            tracing::warn!(path = %old.display(), error = %e, "could not remove an old checkpoint");
        }
    }
    Ok(dest)
}

/// Reads and checks one checkpoint; the model trains on `device`.
pub fn load(path: &Path, device: Device) -> Result<(Model, CheckpointMeta)> {
    let bytes = fs::read(path).map_err(|e| io(path, e))?;
    if bytes.len() < MAGIC.len() + 8 + 4 || &bytes[..8] != MAGIC {
        return Err(bad(path, "not a checkpoint (bad magic or too short)"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let got = crc32fast::hash(body);
    if got != want {
        return Err(bad(
            path,
            format!("checksum mismatch: crc32 {got:08x}, file says {want:08x}"),
        ));
    }
    let mut r = Reader::new(body, 8, path);
    let len = r.u64()? as usize;
    let header: Header = serde_json::from_slice(r.take(len)?).map_err(|e| bad(path, e))?;
    let overflow = || bad(path, "size overflow");
    let user_ids = r.strings(header.users)?;
    let item_ids = r.strings(header.items)?;
    let tower = match (&header.kind, &header.tower) {
        (ModelKind::Mf, _) => None,
        (ModelKind::TwoTower, Some(t)) => Some(t),
        (ModelKind::TwoTower, None) => {
            return Err(bad(path, "two-tower checkpoint without its header"));
        }
    };
    let category_ids = match tower {
        Some(t) => r.strings(t.categories)?,
        None => Vec::new(),
    };
    let dim = tower.map_or(header.cfg.dim, |t| t.cfg.dim);
    let mut table = |rows: usize, init_scale: f32, seed: u64| -> Result<TableParts> {
        Ok(TableParts {
            dim,
            init_scale,
            seed,
            data: r.f32s(rows.checked_mul(dim).ok_or_else(overflow)?)?,
            accum: r.f32s(rows)?,
        })
    };
    let users = table(header.users, header.user_init, header.user_seed)?;
    let items = table(header.items, header.item_init, header.item_seed)?;
    let model = match tower {
        None => {
            let item_counts = f64s(&mut r, header.counts)?;
            let (user_seen, item_seen) = (u32s(&mut r, header.users)?, u32s(&mut r, header.items)?);
            if !r.done() {
                return Err(bad(path, "trailing bytes"));
            }
            Model::Mf(
                MfModel::from_parts(
                    MfParts {
                        cfg: header.cfg,
                        user_ids,
                        item_ids,
                        users,
                        items,
                        item_counts,
                        total_count: header.total_count,
                        steps: header.steps,
                        user_seen,
                        item_seen,
                    },
                    device,
                )
                .map_err(|e| bad(path, e))?,
            )
        }
        Some(t) => {
            let categories = table(t.categories, t.category_init, t.category_seed)?;
            let n = t.cfg.history_len;
            let history = u32s(&mut r, header.users.checked_mul(n).ok_or_else(overflow)?)?;
            let item_categories = u32s(
                &mut r,
                header
                    .items
                    .checked_mul(MAX_CATEGORIES)
                    .ok_or_else(overflow)?,
            )?;
            let history_next = r.take(header.users)?.to_vec();
            let mut dense = Vec::with_capacity(t.dense.len());
            for &len in &t.dense {
                dense.push(r.f32s(len)?);
            }
            let optimizer = r.take(t.optimizer)?.to_vec();
            let counts = f64s(&mut r, header.counts)?;
            let (user_seen, item_seen) = (u32s(&mut r, header.users)?, u32s(&mut r, header.items)?);
            if !r.done() {
                return Err(bad(path, "trailing bytes"));
            }
            Model::TwoTower(
                TwoTowerModel::from_parts(
                    TwoTowerParts {
                        cfg: t.cfg.clone(),
                        user_ids,
                        item_ids,
                        category_ids,
                        users,
                        items,
                        categories,
                        history,
                        history_next,
                        item_categories,
                        dense,
                        optimizer,
                        freq: ItemFrequency {
                            counts,
                            total: header.total_count,
                        },
                        steps: header.steps,
                        user_seen,
                        item_seen,
                    },
                    device,
                )
                .map_err(|e| bad(path, e))?,
            )
        }
    };
    Ok((model, header.meta))
}

/// Last-seen times: one per user row, then one per item row.
fn put_seen(out: &mut Vec<u8>, users: &[u32], items: &[u32]) {
    for x in users.iter().chain(items) {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

fn u32s(r: &mut Reader<'_>, n: usize) -> Result<Vec<u32>> {
    Ok(r.take(n.saturating_mul(4))?
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
        .collect())
}

fn f64s(r: &mut Reader<'_>, n: usize) -> Result<Vec<f64>> {
    Ok(r.take(n.saturating_mul(8))?
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect())
}

/// The newest checkpoint under `dir` that loads; rejected ones are logged with the
/// reason. `None` when there is none.
pub fn load_latest(
    dir: &Path,
    device: &Device,
) -> Result<Option<(Model, CheckpointMeta, PathBuf)>> {
    for (_, path) in list(dir)? {
        match load(&path, device.clone()) {
            Ok((model, meta)) => return Ok(Some((model, meta, path))),
            Err(e) => tracing::error!(error = %e, "rejected a checkpoint; trying an older one"),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
