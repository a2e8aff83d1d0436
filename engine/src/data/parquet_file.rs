//! Parquet in the archive's Arrow schema (`recsys_schemas::arrow`).

use std::fs::File;
use std::path::Path;

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use recsys_schemas::Event;

use crate::{EngineError, Result};

pub(super) fn read(path: &Path) -> Result<Vec<Event>> {
    let bad = |what: String| EngineError::Data(format!("{}: {what}", path.display()));
    let f = File::open(path).map_err(|e| bad(e.to_string()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| bad(format!("not a Parquet file: {e}")))?
        .with_batch_size(65_536)
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad(e.to_string()))?;
        let events =
            recsys_schemas::arrow::batch_to_events(&batch).map_err(|e| bad(e.to_string()))?;
        out.extend(events);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{Format, read};
    use recsys_schemas::Event;
    use std::fs::File;

    #[test]
    fn parquet_in_the_archive_schema_reads_back() {
        let events: Vec<Event> = (0..5)
            .map(|k| Event {
                user_id: format!("u{k}"),
                item_id: format!("i{}", k % 2),
                kind: "click".into(),
                weight: 1.0,
                ts: 1000 + k,
                event_id: None,
            })
            .collect();
        let batch = recsys_schemas::arrow::events_to_batch(&events).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.parquet");
        let mut w = parquet::arrow::ArrowWriter::try_new(
            File::create(&path).unwrap(),
            batch.schema(),
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        assert_eq!(read(Format::Parquet, &path).unwrap(), events);
    }
}
