//! Arrow schema of the event archive (and of any columnar export of events), and the
//! conversion from a slice of events to a record batch.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float32Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::{Event, Result, SchemaError};

/// Column layout of events: one row per event, `ts` as UTC milliseconds.
pub fn event_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("item_id", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("weight", DataType::Float32, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("event_id", DataType::Utf8, true),
    ]))
}

/// Converts events to one record batch in [`event_schema`].
pub fn events_to_batch(events: &[Event]) -> Result<RecordBatch> {
    let strings = |f: fn(&Event) -> &str| -> ArrayRef {
        Arc::new(events.iter().map(|e| Some(f(e))).collect::<StringArray>())
    };
    let columns: Vec<ArrayRef> = vec![
        strings(|e| &e.user_id),
        strings(|e| &e.item_id),
        strings(|e| &e.kind),
        Arc::new(events.iter().map(|e| e.weight).collect::<Float32Array>()),
        Arc::new(
            TimestampMillisecondArray::from(events.iter().map(|e| e.ts).collect::<Vec<_>>())
                .with_timezone("UTC"),
        ),
        Arc::new(
            events
                .iter()
                .map(|e| e.event_id.as_deref())
                .collect::<StringArray>(),
        ),
    ];
    Ok(RecordBatch::try_new(event_schema(), columns)?)
}

/// Reads events back from a record batch. Columns are found by name, so files with
/// extra columns or another column order are accepted; `user_id` and `item_id` are
/// required, `kind`, `weight`, `ts` (milliseconds, timestamp or int64) and `event_id`
/// are optional (defaults as for JSON events). Rows are validated like JSON events; the
/// error names the row and field.
pub fn batch_to_events(batch: &RecordBatch) -> Result<Vec<Event>> {
    read_batch(batch).map_err(SchemaError::Arrow)
}

fn read_batch(batch: &RecordBatch) -> std::result::Result<Vec<Event>, String> {
    use arrow_array::{Array, Int64Array, LargeStringArray};
    let strings = |name: &str| -> Result<Option<Vec<Option<String>>>, String> {
        let Some(col) = batch.column_by_name(name) else {
            return Ok(None);
        };
        let any = col.as_any();
        let values: Vec<Option<String>> = if let Some(a) = any.downcast_ref::<StringArray>() {
            a.iter().map(|v| v.map(str::to_owned)).collect()
        } else if let Some(a) = any.downcast_ref::<LargeStringArray>() {
            a.iter().map(|v| v.map(str::to_owned)).collect()
        } else {
            return Err(format!(
                "column `{name}` must be a string column, not {}",
                col.data_type()
            ));
        };
        Ok(Some(values))
    };
    let required = |name: &str| -> Result<Vec<Option<String>>, String> {
        strings(name)?.ok_or_else(|| format!("missing column `{name}`"))
    };
    let users = required("user_id")?;
    let items = required("item_id")?;
    let kinds = strings("kind")?;
    let event_ids = strings("event_id")?;
    let weights: Option<Vec<Option<f32>>> = match batch.column_by_name("weight") {
        None => None,
        Some(col) => Some(
            col.as_any()
                .downcast_ref::<Float32Array>()
                .ok_or_else(|| format!("column `weight` must be float32, not {}", col.data_type()))?
                .iter()
                .collect(),
        ),
    };
    let ts: Option<Vec<Option<i64>>> = match batch.column_by_name("ts") {
        None => None,
        Some(col) => {
            let any = col.as_any();
            if let Some(a) = any.downcast_ref::<TimestampMillisecondArray>() {
                Some(a.iter().collect())
            } else if let Some(a) = any.downcast_ref::<Int64Array>() {
                Some(a.iter().collect())
            } else {
                return Err(format!(
                    "column `ts` must be a millisecond timestamp or int64, not {}",
                    col.data_type()
                ));
            }
        }
    };
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let (Some(user_id), Some(item_id)) = (users[row].clone(), items[row].clone()) else {
            return Err(format!("row {row}: user_id and item_id must not be null"));
        };
        let kind = kinds
            .as_ref()
            .and_then(|k| k[row].clone())
            .unwrap_or_else(|| "interaction".to_owned());
        let weight = weights
            .as_ref()
            .and_then(|w| w[row])
            .unwrap_or_else(|| crate::event::default_weight(&kind));
        let e = Event {
            user_id,
            item_id,
            weight,
            kind,
            ts: ts.as_ref().and_then(|t| t[row]).unwrap_or(0),
            event_id: event_ids.as_ref().and_then(|k| k[row].clone()),
        };
        e.validate().map_err(|err| format!("row {row}: {err}"))?;
        out.push(e);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;

    #[test]
    fn batch_matches_schema_and_values() {
        let events = vec![
            Event::from_json(br#"{"user_id":"u1","item_id":"a","ts":5}"#, 0).unwrap(),
            Event::from_json(br#"{"user_id":"u2","item_id":"b","event_id":"x"}"#, 9).unwrap(),
        ];
        let batch = events_to_batch(&events).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), event_schema());
        let ts = batch
            .column(4)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        assert_eq!(ts.value(0), 5);
        assert_eq!(ts.value(1), 9);
        let ids = batch.column(5);
        assert!(ids.is_null(0));
        assert!(!ids.is_null(1));
        assert_eq!(batch_to_events(&batch).unwrap(), events);
    }
}
