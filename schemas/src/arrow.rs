//! Arrow schema of the event archive (and of any columnar export of events), and the
//! conversion from a slice of events to a record batch.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float32Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::Event;

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
pub fn events_to_batch(events: &[Event]) -> Result<RecordBatch, ArrowError> {
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
    RecordBatch::try_new(event_schema(), columns)
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
    }
}
