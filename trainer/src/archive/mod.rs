//! The event archive: Parquet files by day, written by `recsys archive` (from the `events`
//! topic) or `recsys generate` (synthetic), read by `recsys retrain` and `recsys eval`.
//!
//! Layout under the archive directory:
//!
//! ```text
//! day=2026-01-01/part-p000-000000000000-000000004095.parquet
//! day=2026-01-02/...
//! _offsets.json        {"0": 4096, "1": 3980}   next offset per partition: the commit point
//! ```
//!
//! A file holds the events of one partition's offset range `[first, last]` that fall on its
//! day (by event time), in the Arrow schema of `recsys_schemas::arrow`. A flush writes all
//! its day files (temporary name, fsync, rename, directory fsync) and only then replaces
//! `_offsets.json` the same way. On start, files of a partition whose first offset is at
//! or past the committed next offset are leftovers of a flush that never committed: they
//! are deleted, and consumption resumes at the committed offsets. So a kill at any point
//! neither loses nor duplicates an event.

mod consume;
mod layout;

pub use consume::{ArchiveOptions, ArchiveReport, run};
pub use layout::{
    Part, committed, day_of, days, parts, read_days, read_days_upto, recover, write_events,
};
