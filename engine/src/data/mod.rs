//! Readers of interaction files for `recsys eval` and the streaming evaluation: the
//! MovieLens formats, JSON lines of events, Parquet in the archive's Arrow schema, and
//! plain `user item seconds` text.
//! Every error names the file and, for text formats, the line.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::str::FromStr;

use recsys_schemas::Event;

use crate::{EngineError, Result};

mod jsonl;
mod movielens;
mod parquet_file;
mod text;

/// Input file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `u.data` (tab-separated), `ratings.dat` (`::`) or `ratings.csv` (with header):
    /// user, item, rating, unix seconds. Every rating counts as one interaction.
    Movielens,
    /// One event JSON object per line, as produced to the `events` topic.
    Jsonl,
    /// Parquet in the archive's Arrow schema (`user_id`, `item_id`, `ts`, ...).
    Parquet,
    /// `user item seconds [weight]` a line, white-space separated (JODIE's logs).
    Text,
}

impl Format {
    /// Every format's name, as [`FromStr`] reads it.
    pub const NAMES: [&str; 4] = ["movielens", "jsonl", "parquet", "text"];
}

impl FromStr for Format {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "movielens" => Ok(Self::Movielens),
            "jsonl" => Ok(Self::Jsonl),
            "parquet" => Ok(Self::Parquet),
            "text" => Ok(Self::Text),
            other => Err(EngineError::Data(format!(
                "format {other:?}: expected one of {}",
                Self::NAMES.join(", ")
            ))),
        }
    }
}

/// Reads interactions from `path` in `format`. Errors name the file and line.
pub fn read(format: Format, path: &Path) -> Result<Vec<Event>> {
    match format {
        Format::Movielens => movielens::read(path),
        Format::Jsonl => jsonl::read(path),
        Format::Parquet => parquet_file::read(path),
        Format::Text => text::read(path),
    }
}

/// `path:line` of an error, and the error.
fn at(path: &Path, line: usize, what: impl std::fmt::Display) -> EngineError {
    EngineError::Data(format!("{}:{line}: {what}", path.display()))
}

/// The file's lines, numbered from 1.
fn lines(path: &Path) -> Result<impl Iterator<Item = (usize, std::io::Result<String>)>> {
    let f = File::open(path).map_err(|e| EngineError::Data(format!("{}: {e}", path.display())))?;
    Ok(BufReader::new(f)
        .lines()
        .enumerate()
        .map(|(n, l)| (n + 1, l)))
}

/// Writes `text` to `dir/name` for a test and returns the path.
#[cfg(test)]
pub(crate) fn write_test_file(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}
