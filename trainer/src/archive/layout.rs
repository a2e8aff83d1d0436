//! The archive's files: their layout and names, the committed offsets, atomic writes,
//! and reading days back.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use recsys_schemas::Event;

use crate::{Result, TrainerError};

const OFFSETS: &str = "_offsets.json";

/// `YYYY-MM-DD` (UTC) of a millisecond timestamp.
pub fn day_of(ts_ms: i64) -> String {
    // Civil-from-days (Howard Hinnant), no date crate needed.
    let days = ts_ms.div_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}")
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(TrainerError::io(dir))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(TrainerError::io(&tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(TrainerError::io(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(TrainerError::io(path))?;
    fsync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Writes `events` as one Parquet file (zstd) atomically.
pub(super) fn write_parquet(path: &Path, events: &[Event]) -> Result<()> {
    let batch = recsys_schemas::arrow::events_to_batch(events)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props))?;
    w.write(&batch)?;
    w.close()?;
    write_atomic(path, &buf)
}

/// One archive file's name parts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Part {
    pub day: String,
    pub partition: i32,
    pub first: i64,
    pub last: i64,
    pub path: PathBuf,
}

fn parse_part(day: &str, path: &Path) -> Option<Part> {
    let name = path.file_name()?.to_str()?;
    let rest = name.strip_prefix("part-p")?.strip_suffix(".parquet")?;
    let mut it = rest.split('-');
    Some(Part {
        day: day.to_owned(),
        partition: it.next()?.parse().ok()?,
        first: it.next()?.parse().ok()?,
        last: it.next()?.parse().ok()?,
        path: path.to_owned(),
    })
}

/// Every archive file, by day, then partition, then offset.
pub fn parts(dir: &Path) -> Result<Vec<Part>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(TrainerError::io(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(TrainerError::io(dir))?;
        let name = entry.file_name();
        let Some(day) = name.to_str().and_then(|n| n.strip_prefix("day=")) else {
            continue;
        };
        let day_dir = entry.path();
        for f in fs::read_dir(&day_dir).map_err(TrainerError::io(&day_dir))? {
            let f = f.map_err(TrainerError::io(&day_dir))?;
            if let Some(p) = parse_part(day, &f.path()) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The committed next offset per partition.
pub fn committed(dir: &Path) -> Result<BTreeMap<i32, i64>> {
    let path = dir.join(OFFSETS);
    match fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| TrainerError::Data(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(TrainerError::io(&path)(e)),
    }
}

/// Deletes files of flushes that never committed; returns how many.
pub fn recover(dir: &Path) -> Result<usize> {
    let next = committed(dir)?;
    let mut removed = 0;
    for p in parts(dir)? {
        if p.first >= next.get(&p.partition).copied().unwrap_or(0) {
            fs::remove_file(&p.path).map_err(TrainerError::io(&p.path))?;
            removed += 1;
        }
    }
    // Temporary files of an interrupted write.
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        for f in fs::read_dir(entry.path()).into_iter().flatten().flatten() {
            if f.path().extension().is_some_and(|e| e == "tmp") {
                let _ = fs::remove_file(f.path());
            }
        }
    }
    Ok(removed)
}

/// Buffers one partition's events until a flush.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) first: Option<i64>,
    pub(super) last: i64,
    pub(super) by_day: BTreeMap<String, Vec<Event>>,
    pub(super) events: usize,
}

/// Writes the buffered events (one file per partition and day), then commits the
/// offsets. `next` is updated to the flushed positions.
pub(super) fn flush(
    dir: &Path,
    pending: &mut HashMap<i32, Pending>,
    next: &mut BTreeMap<i32, i64>,
) -> Result<usize> {
    let mut written = 0;
    let mut touched_days = Vec::new();
    for (&partition, p) in pending.iter_mut() {
        let Some(first) = p.first else { continue };
        for (day, events) in &p.by_day {
            let day_dir = dir.join(format!("day={day}"));
            fs::create_dir_all(&day_dir).map_err(TrainerError::io(&day_dir))?;
            let path = day_dir.join(format!(
                "part-p{partition:03}-{first:012}-{:012}.parquet",
                p.last
            ));
            write_parquet(&path, events)?;
            written += events.len();
            touched_days.push(day_dir);
        }
        next.insert(partition, p.last + 1);
    }
    if written == 0 && pending.values().all(|p| p.first.is_none()) {
        return Ok(0);
    }
    fsync_dir(dir)?;
    write_atomic(&dir.join(OFFSETS), &serde_json::to_vec(next)?)?;
    pending.clear();
    Ok(written)
}

/// Writes `events` into the archive layout as partition 0, offsets in input order, and
/// commits them. For `recsys generate` and tests.
pub fn write_events(dir: &Path, events: &[Event]) -> Result<usize> {
    fs::create_dir_all(dir).map_err(TrainerError::io(dir))?;
    let mut next = committed(dir)?;
    let start = next.get(&0).copied().unwrap_or(0);
    let mut written = 0;
    for (k, chunk) in events.chunks(1 << 20).enumerate() {
        let first = start + (k << 20) as i64;
        let mut p = Pending {
            first: Some(first),
            last: first + chunk.len() as i64 - 1,
            ..Pending::default()
        };
        for e in chunk {
            p.by_day.entry(day_of(e.ts)).or_default().push(e.clone());
        }
        let mut pending = HashMap::from([(0, p)]);
        written += flush(dir, &mut pending, &mut next)?;
    }
    Ok(written)
}

/// The days present in the archive, oldest first.
pub fn days(dir: &Path) -> Result<Vec<String>> {
    let mut d: Vec<String> = parts(dir)?.into_iter().map(|p| p.day).collect();
    d.dedup();
    Ok(d)
}

/// Streams the committed events of the given days in record batches of at most
/// `batch_rows` rows, calling `f` with each day and its events.
pub fn read_days(
    dir: &Path,
    days: &[String],
    batch_rows: usize,
    f: &mut dyn FnMut(&str, Vec<Event>) -> Result<()>,
) -> Result<()> {
    read_days_upto(dir, days, &committed(dir)?, batch_rows, f)
}

/// [`read_days`] limited to the files below `next` (the committed offsets read earlier),
/// so files an archiver commits meanwhile are left out.
pub fn read_days_upto(
    dir: &Path,
    days: &[String],
    next: &BTreeMap<i32, i64>,
    batch_rows: usize,
    f: &mut dyn FnMut(&str, Vec<Event>) -> Result<()>,
) -> Result<()> {
    for p in parts(dir)? {
        if !days.contains(&p.day) || p.first >= next.get(&p.partition).copied().unwrap_or(0) {
            continue;
        }
        let file = File::open(&p.path).map_err(TrainerError::io(&p.path))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)?
            .with_batch_size(batch_rows.max(1))
            .build()?;
        for batch in reader {
            let bad = |e: &dyn std::fmt::Display| {
                TrainerError::Data(format!("{}: {e}", p.path.display()))
            };
            let batch = batch.map_err(|e| bad(&e))?;
            let events = recsys_schemas::arrow::batch_to_events(&batch).map_err(|e| bad(&e))?;
            f(&p.day, events)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_calendar_days() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(1_767_225_600_000), "2026-01-01");
        assert_eq!(day_of(1_767_225_600_000 - 1), "2025-12-31");
        assert_eq!(day_of(951_782_400_000), "2000-02-29");
    }

    fn ev(k: i64, ts: i64) -> Event {
        Event {
            user_id: format!("u{}", k % 7),
            item_id: format!("i{}", k % 5),
            kind: "click".into(),
            weight: 1.0,
            ts,
            event_id: Some(format!("e{k}")),
        }
    }

    #[test]
    fn written_events_read_back_by_day_and_uncommitted_files_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let day = 86_400_000;
        let events: Vec<Event> = (0..100)
            .map(|k| ev(k, 1_767_225_600_000 + (k % 3) * day))
            .collect();
        assert_eq!(write_events(dir.path(), &events).unwrap(), 100);
        let all_days = days(dir.path()).unwrap();
        assert_eq!(all_days, vec!["2026-01-01", "2026-01-02", "2026-01-03"]);
        let mut got = Vec::new();
        read_days(dir.path(), &all_days[1..], 7, &mut |d, e| {
            assert!(d != "2026-01-01");
            got.extend(e);
            Ok(())
        })
        .unwrap();
        assert_eq!(got.len(), 66);
        // A flush that wrote its file but died before committing: ignored, then removed.
        let stray = dir
            .path()
            .join("day=2026-01-01/part-p000-000000000100-000000000199.parquet");
        write_parquet(&stray, &events).unwrap();
        let mut n = 0;
        read_days(dir.path(), &all_days, 1000, &mut |_, e| {
            n += e.len();
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 100);
        assert_eq!(recover(dir.path()).unwrap(), 1);
        assert!(!stray.exists());
    }
}
