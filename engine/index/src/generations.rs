//! The models directory shared by the nightly retrain, online trainers and serving
//! replicas (docs/DESIGN.md §4, generations):
//!
//! ```text
//! models/CURRENT              {"generation": 3, "previous": 2}
//! models/g3/ckpt-….bin        checkpoints of generation 3 (retrain's, then the trainer's)
//! models/g3/snapshots/…       base index snapshots of generation 3
//! ```
//!
//! `CURRENT` is the one switch: the retrain flips it once a generation is complete
//! (checkpoint, snapshot, user vectors), `recsys rollback` flips it back, and trainers
//! and replicas poll it and follow.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{IndexError, Result};

/// The generation pointer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    pub generation: u64,
    pub previous: Option<u64>,
}

const CURRENT: &str = "CURRENT";

fn io(path: &Path, e: std::io::Error) -> IndexError {
    IndexError::Snapshot(format!("{}: {e}", path.display()))
}

/// Checkpoints of generation `g`.
pub fn generation_dir(models: &Path, g: u64) -> PathBuf {
    models.join(format!("g{g}"))
}

/// Base index snapshots of generation `g`.
pub fn snapshot_dir(models: &Path, g: u64) -> PathBuf {
    generation_dir(models, g).join("snapshots")
}

/// The current generation, if one was ever made current.
pub fn current(models: &Path) -> Result<Option<Current>> {
    let path = models.join(CURRENT);
    match fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| IndexError::Snapshot(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path, e)),
    }
}

/// Flips the pointer in one atomic step (temporary file, fsync, rename, directory fsync):
/// a reader sees the old pointer or the new one, never a torn one.
pub fn set_current(models: &Path, c: Current) -> Result<()> {
    fs::create_dir_all(models).map_err(|e| io(models, e))?;
    let path = models.join(CURRENT);
    let tmp = models.join(format!("{CURRENT}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        fs::write(&tmp, serde_json::to_vec(&c)?)?;
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, &path)?;
        fs::File::open(models)?.sync_all()
    };
    write().map_err(|e| io(&path, e))
}

/// Makes `g` current if nothing is yet (an online trainer starting on an empty models
/// directory); returns the pointer as it stands afterwards.
pub fn init_current(models: &Path, g: u64) -> Result<Current> {
    if let Some(c) = current(models)? {
        return Ok(c);
    }
    let c = Current {
        generation: g,
        previous: None,
    };
    set_current(models, c)?;
    Ok(c)
}

/// Generations that have a directory under `models`.
pub fn existing(models: &Path) -> Result<Vec<u64>> {
    let entries = match fs::read_dir(models) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(models, e)),
    };
    let mut out: Vec<u64> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix('g')?.parse().ok())
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// The number a new generation gets: above the current one and above every directory,
/// so it never shares a directory with a generation an online trainer evolves.
pub fn next_generation(models: &Path) -> Result<u64> {
    let newest = existing(models)?.into_iter().max().unwrap_or(0);
    let cur = current(models)?.map_or(0, |c| c.generation);
    Ok(newest.max(cur) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_round_trips_and_new_generations_skip_existing_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let models = dir.path();
        assert_eq!(current(models).unwrap(), None);
        assert_eq!(next_generation(models).unwrap(), 1);
        let c = init_current(models, 1).unwrap();
        assert_eq!(c.generation, 1);
        // A second init leaves the pointer alone.
        set_current(
            models,
            Current {
                generation: 2,
                previous: Some(1),
            },
        )
        .unwrap();
        assert_eq!(init_current(models, 1).unwrap().generation, 2);
        fs::create_dir_all(generation_dir(models, 5)).unwrap();
        fs::create_dir_all(models.join("gx")).unwrap();
        assert_eq!(existing(models).unwrap(), vec![5]);
        assert_eq!(next_generation(models).unwrap(), 6);
        fs::write(models.join(CURRENT), b"{").unwrap();
        let err = current(models).unwrap_err().to_string();
        assert!(err.contains("CURRENT"), "{err}");
    }
}
