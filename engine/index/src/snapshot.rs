//! Base index snapshots: what a serving replica loads on start before it follows the
//! `item-vectors` topic from the offsets the snapshot includes.
//!
//! A snapshot is a directory `g{generation}-{seq}` holding
//! - `index.faiss`: the FAISS structure, written by FAISS's own `write_index`;
//! - `items.bin`: the item ids in row order and the raw vectors of the live rows (the
//!   exact re-ranking and fold-in read them; FAISS cannot give them back from PQ codes);
//! - `manifest.json`: generation, dimension, metric, item count, the factory string, the
//!   size and CRC-32 of both files, and the next `item-vectors` offset per partition.
//!
//! It is written into `…tmp`, every file fsynced, renamed into place, and the parent
//! directory fsynced, so a reader never sees a half-written snapshot; a torn or corrupt
//! one (wrong checksum, wrong dimension, unreadable FAISS file) is rejected on load and
//! the next older one is tried.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bytes::Reader;
use crate::ids::IdMap;
use crate::{IndexConfig, ItemIndex};
use crate::{IndexError, Result};

const ITEMS_MAGIC: &[u8; 8] = b"RSITEMS1";
const INDEX_FILE: &str = "index.faiss";
const ITEMS_FILE: &str = "items.bin";
const MANIFEST_FILE: &str = "manifest.json";

/// Size and checksum of one file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    pub bytes: u64,
    pub crc32: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotManifest {
    pub format: u32,
    pub generation: u64,
    /// Increases with every snapshot of a writer; orders snapshots of one generation.
    pub seq: u64,
    pub dim: usize,
    pub metric: String,
    pub factory: String,
    /// Live (searchable) items.
    pub item_count: usize,
    /// Items the FAISS quantizers were trained for.
    pub built_for: usize,
    pub created_ms: i64,
    /// `item-vectors` partition → the first offset *not* reflected in this snapshot.
    pub offsets: BTreeMap<i32, i64>,
    pub files: BTreeMap<String, FileSum>,
}

/// A snapshot read back and checked.
#[derive(Debug)]
pub struct Snapshot {
    pub manifest: SnapshotManifest,
    pub ids: IdMap,
    pub index: ItemIndex,
    pub path: PathBuf,
}

fn io_err(what: impl std::fmt::Display, e: std::io::Error) -> IndexError {
    IndexError::Snapshot(format!("{what}: {e}"))
}

fn bad(path: &Path, why: impl std::fmt::Display) -> IndexError {
    IndexError::Snapshot(format!("{}: {why}", path.display()))
}

fn file_sum(path: &Path) -> Result<FileSum> {
    let mut r = BufReader::with_capacity(
        1 << 20,
        File::open(path).map_err(|e| io_err(path.display(), e))?,
    );
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = r.read(&mut buf).map_err(|e| io_err(path.display(), e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(FileSum {
        bytes,
        crc32: h.finalize(),
    })
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir.display(), e))
}

fn dir_name(generation: u64, seq: u64) -> String {
    format!("g{generation:06}-{seq:012}")
}

/// `(generation, seq)` of a snapshot directory name, `None` for anything else.
fn parse_dir_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix('g')?;
    let (g, s) = rest.split_once('-')?;
    Some((g.parse().ok()?, s.parse().ok()?))
}

/// Complete snapshot directories under `root`, newest (highest generation, then seq) first.
pub fn list(root: &Path) -> Result<Vec<(u64, u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(root.display(), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_err(root.display(), e))?;
        let name = entry.file_name();
        if let Some((g, s)) = name.to_str().and_then(parse_dir_name) {
            out.push((g, s, entry.path()));
        }
    }
    out.sort_by_key(|s| std::cmp::Reverse((s.0, s.1)));
    Ok(out)
}

/// Writes a snapshot of `index` (whose FAISS ids are rows of `ids`) for `generation`,
/// atomically, and keeps only the newest `keep` snapshots of that generation.
pub fn write(
    root: &Path,
    generation: u64,
    ids: &IdMap,
    index: &ItemIndex,
    offsets: &BTreeMap<i32, i64>,
    keep: usize,
) -> Result<PathBuf> {
    fs::create_dir_all(root).map_err(|e| io_err(root.display(), e))?;
    let seq = list(root)?
        .iter()
        .filter(|s| s.0 == generation)
        .map(|s| s.1 + 1)
        .max()
        .unwrap_or(0);
    let name = dir_name(generation, seq);
    let tmp = root.join(format!("{name}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| io_err(tmp.display(), e))?;
    }
    fs::create_dir(&tmp).map_err(|e| io_err(tmp.display(), e))?;

    let index_path = tmp.join(INDEX_FILE);
    index.write_faiss(&index_path)?;
    let items_path = tmp.join(ITEMS_FILE);
    write_items(&items_path, ids, index)?;
    let mut files = BTreeMap::new();
    for (file, path) in [(INDEX_FILE, &index_path), (ITEMS_FILE, &items_path)] {
        File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_err(path.display(), e))?;
        files.insert(file.to_owned(), file_sum(path)?);
    }
    let manifest = SnapshotManifest {
        format: 1,
        generation,
        seq,
        dim: index.dim(),
        metric: "inner_product".into(),
        factory: index.factory().to_owned(),
        item_count: index.len(),
        built_for: index.built_for(),
        created_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        offsets: offsets.clone(),
        files,
    };
    let manifest_path = tmp.join(MANIFEST_FILE);
    let mut f = File::create(&manifest_path).map_err(|e| io_err(manifest_path.display(), e))?;
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| IndexError::Snapshot(format!("manifest: {e}")))?;
    f.write_all(&json)
        .and_then(|()| f.sync_all())
        .map_err(|e| io_err(manifest_path.display(), e))?;
    fsync_dir(&tmp)?;
    let dest = root.join(&name);
    fs::rename(&tmp, &dest).map_err(|e| io_err(dest.display(), e))?;
    fsync_dir(root)?;

    for (_, _, old) in list(root)?
        .into_iter()
        .filter(|s| s.0 == generation)
        .skip(keep.max(1))
    {
        if let Err(e) = fs::remove_dir_all(&old) {
            tracing::warn!(path = %old.display(), error = %e, "could not remove an old snapshot");
        }
    }
    Ok(dest)
}

fn write_items(path: &Path, ids: &IdMap, index: &ItemIndex) -> Result<()> {
    let f = File::create(path).map_err(|e| io_err(path.display(), e))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let (rows, vectors) = index.items();
    let mut put = |b: &[u8]| w.write_all(b).map_err(|e| io_err(path.display(), e));
    put(ITEMS_MAGIC)?;
    put(&(index.dim() as u32).to_le_bytes())?;
    put(&(ids.len() as u64).to_le_bytes())?;
    for id in ids.ids() {
        put(&(id.len() as u32).to_le_bytes())?;
        put(id.as_bytes())?;
    }
    put(&(rows.len() as u64).to_le_bytes())?;
    for &row in &rows {
        put(&row.to_le_bytes())?;
    }
    for x in &vectors {
        put(&x.to_le_bytes())?;
    }
    w.flush().map_err(|e| io_err(path.display(), e))
}

fn read_items(path: &Path, dim: usize) -> Result<(IdMap, Vec<u64>, Vec<f32>)> {
    let bytes = fs::read(path).map_err(|e| io_err(path.display(), e))?;
    let mut c = Reader::new(&bytes, 0, path);
    if c.take(8)? != ITEMS_MAGIC {
        return Err(bad(path, "not an items file (bad magic)"));
    }
    let file_dim = c.u32()? as usize;
    if file_dim != dim {
        return Err(bad(
            path,
            format!("dimension {file_dim}, manifest says {dim}"),
        ));
    }
    let n_ids = c.u64()? as usize;
    let ids = c.strings(n_ids)?;
    let map = IdMap::from_ids(ids).map_err(|e| bad(path, e))?;
    let live = c.u64()? as usize;
    let mut rows = Vec::with_capacity(live.min(bytes.len() / 8));
    for _ in 0..live {
        let row = c.u64()?;
        if row as usize >= map.len() {
            return Err(bad(path, format!("row {row} has no id")));
        }
        rows.push(row);
    }
    let vectors = c.f32s(live * dim)?;
    if !c.done() {
        return Err(bad(path, "trailing bytes"));
    }
    Ok((map, rows, vectors))
}

/// Reads and checks one snapshot directory: its generation and dimension must be the
/// expected ones (when given) and both files must match the manifest's checksums.
pub fn load(
    path: &Path,
    generation: Option<u64>,
    dim: Option<usize>,
    cfg: &IndexConfig,
) -> Result<Snapshot> {
    let manifest_path = path.join(MANIFEST_FILE);
    let raw = fs::read(&manifest_path).map_err(|e| io_err(manifest_path.display(), e))?;
    let manifest: SnapshotManifest =
        serde_json::from_slice(&raw).map_err(|e| bad(&manifest_path, e))?;
    if manifest.format != 1 {
        return Err(bad(
            path,
            format!("format {} (this build reads 1)", manifest.format),
        ));
    }
    if let Some(g) = generation
        && manifest.generation != g
    {
        return Err(bad(
            path,
            format!("generation {}, expected {g}", manifest.generation),
        ));
    }
    if let Some(d) = dim
        && manifest.dim != d
    {
        return Err(bad(
            path,
            format!("dimension {}, expected {d}", manifest.dim),
        ));
    }
    if manifest.metric != "inner_product" {
        return Err(bad(
            path,
            format!("metric {}, expected inner_product", manifest.metric),
        ));
    }
    for file in [INDEX_FILE, ITEMS_FILE] {
        let want = manifest
            .files
            .get(file)
            .ok_or_else(|| bad(path, format!("manifest lists no {file}")))?;
        let got = file_sum(&path.join(file))?;
        if &got != want {
            return Err(bad(
                path,
                format!(
                    "{file} checksum mismatch: {} bytes crc32 {:08x}, manifest says {} bytes crc32 {:08x}",
                    got.bytes, got.crc32, want.bytes, want.crc32
                ),
            ));
        }
    }
    let (ids, rows, vectors) = read_items(&path.join(ITEMS_FILE), manifest.dim)?;
    if rows.len() != manifest.item_count {
        return Err(bad(
            path,
            format!(
                "{} live items, manifest says {}",
                rows.len(),
                manifest.item_count
            ),
        ));
    }
    let index = ItemIndex::read_faiss(
        &path.join(INDEX_FILE),
        manifest.dim,
        &manifest.factory,
        cfg,
        manifest.built_for,
        &rows,
        vectors,
    )
    .map_err(|e| bad(path, e))?;
    Ok(Snapshot {
        manifest,
        ids,
        index,
        path: path.to_owned(),
    })
}

/// The newest snapshot of `generation` under `root` that loads and checks out. Every
/// rejected one is logged with its reason; `None` when there is none.
pub fn load_latest(
    root: &Path,
    generation: u64,
    dim: Option<usize>,
    cfg: &IndexConfig,
) -> Result<Option<Snapshot>> {
    for (g, _, path) in list(root)? {
        if g != generation {
            continue;
        }
        match load(&path, Some(generation), dim, cfg) {
            Ok(s) => return Ok(Some(s)),
            Err(e) => {
                tracing::error!(error = %e, "rejected an index snapshot; trying an older one")
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize, dim: usize, factory: &str) -> (IdMap, ItemIndex) {
        let mut ids = IdMap::new();
        let mut rows = Vec::new();
        let mut vectors = Vec::new();
        for i in 0..n {
            rows.push(u64::from(ids.get_or_insert(&format!("item-{i}"))));
            vectors.extend((0..dim).map(|j| ((i * 7 + j * 3) % 11) as f32 - 5.0));
        }
        let cfg = IndexConfig {
            factory: Some(factory.into()),
            ..IndexConfig::default()
        };
        (ids, ItemIndex::build(dim, &cfg, &rows, &vectors).unwrap())
    }

    fn offsets() -> BTreeMap<i32, i64> {
        BTreeMap::from([(0, 42), (1, 7)])
    }

    #[test]
    fn round_trip_keeps_items_answers_and_offsets() {
        let dir = tempfile::tempdir().unwrap();
        for factory in ["IDMap2,Flat", "IVF16,Flat", "IVF16,PQ4x4fs"] {
            let (ids, mut index) = sample(1_000, 8, factory);
            index.remove(&[3, 500]).unwrap();
            let path = write(dir.path(), 2, &ids, &index, &offsets(), 3).unwrap();
            let snap = load(&path, Some(2), Some(8), &IndexConfig::default()).unwrap();
            assert_eq!(snap.manifest.offsets, offsets());
            assert_eq!(snap.manifest.item_count, 998);
            assert_eq!(snap.index.len(), 998);
            assert_eq!(snap.ids.ids(), ids.ids());
            assert!(!snap.index.contains(3) && snap.index.contains(4));
            let q: Vec<f32> = index.vector(10).unwrap().to_vec();
            assert_eq!(
                snap.index.search(&q, 10).unwrap(),
                index.search(&q, 10).unwrap(),
                "{factory}"
            );
        }
        // Keeps the newest three of the generation.
        assert_eq!(list(dir.path()).unwrap().len(), 3);
    }

    #[test]
    fn corrupt_files_and_wrong_dimension_are_rejected_and_older_one_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let (ids, index) = sample(300, 8, "IDMap2,Flat");
        let good = write(dir.path(), 1, &ids, &index, &offsets(), 5).unwrap();
        let newer = write(dir.path(), 1, &ids, &index, &BTreeMap::new(), 5).unwrap();
        let cfg = IndexConfig::default();

        // One flipped byte in the FAISS file: checksum mismatch.
        let p = newer.join(INDEX_FILE);
        let mut bytes = fs::read(&p).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        fs::write(&p, &bytes).unwrap();
        let err = load(&newer, Some(1), Some(8), &cfg)
            .unwrap_err()
            .to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        let snap = load_latest(dir.path(), 1, Some(8), &cfg).unwrap().unwrap();
        assert_eq!(snap.path, good);

        // Wrong dimension and wrong generation.
        let err = load(&good, Some(1), Some(16), &cfg)
            .unwrap_err()
            .to_string();
        assert!(err.contains("dimension 8, expected 16"), "{err}");
        assert!(load_latest(dir.path(), 2, Some(8), &cfg).unwrap().is_none());

        // A truncated items file whose manifest was "fixed up" still fails to parse.
        let p = good.join(ITEMS_FILE);
        let bytes = fs::read(&p).unwrap();
        fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
        let mut m: SnapshotManifest =
            serde_json::from_slice(&fs::read(good.join(MANIFEST_FILE)).unwrap()).unwrap();
        m.files.insert(ITEMS_FILE.into(), file_sum(&p).unwrap());
        fs::write(good.join(MANIFEST_FILE), serde_json::to_vec(&m).unwrap()).unwrap();
        let err = load(&good, Some(1), Some(8), &cfg).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        assert!(load_latest(dir.path(), 1, Some(8), &cfg).unwrap().is_none());
    }

    #[test]
    fn half_written_directories_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("g000001-000000000009.tmp")).unwrap();
        fs::create_dir(dir.path().join("notes")).unwrap();
        assert!(list(dir.path()).unwrap().is_empty());
    }
}
