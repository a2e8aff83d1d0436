//! What comes in: a Kafka message parsed and validated into an event or an item
//! update, or sent to the dead-letter topic with its source and the reason.

use std::time::Duration;

use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use recsys_schemas::event::now_ms;
use recsys_schemas::{Event, EventLimits, ItemMeta};
use tracing::warn;

/// Sends a message that failed to parse or validate to the dead-letter topic `topic`,
/// with its source topic, partition and offset and the reason in headers.
pub(super) async fn reject(
    dlq: &FutureProducer,
    topic: &str,
    msg: &BorrowedMessage<'_>,
    reason: &str,
) {
    warn!(
        topic = msg.topic(),
        partition = msg.partition(),
        offset = msg.offset(),
        reason,
        "rejected event sent to the dead-letter topic"
    );
    let partition = msg.partition().to_string();
    let offset = msg.offset().to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "source_topic",
            value: Some(msg.topic()),
        })
        .insert(Header {
            key: "source_partition",
            value: Some(partition.as_str()),
        })
        .insert(Header {
            key: "source_offset",
            value: Some(offset.as_str()),
        })
        .insert(Header {
            key: "reason",
            value: Some(reason),
        });
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
        .payload(msg.payload().unwrap_or_default())
        .headers(headers);
    if let Some(key) = msg.key() {
        record = record.key(key);
    }
    if let Err((e, _)) = dlq.send(record, Duration::from_secs(5)).await {
        warn!(error = %e, "could not write to the dead-letter topic");
    }
}

/// The reference time of `msg` for the `ts` window: the earlier of the wall clock and the
/// message's timestamp.
fn reference(msg: &BorrowedMessage<'_>) -> i64 {
    EventLimits::reference(now_ms(), msg.timestamp().to_millis())
}

/// Parses an `items` message; the error is the dead-letter reason.
pub(super) fn parse_item(
    msg: &BorrowedMessage<'_>,
    limits: &EventLimits,
) -> Result<ItemMeta, String> {
    let payload = msg.payload().ok_or_else(|| "empty message".to_owned())?;
    let reference = reference(msg);
    let meta = ItemMeta::from_json(payload, reference).map_err(|e| e.to_string())?;
    limits
        .check_ts(meta.ts, reference)
        .map_err(|e| e.to_string())?;
    Ok(meta)
}

/// Parses a Kafka message into a validated event within `limits`; the error is the
/// dead-letter reason.
pub(super) fn parse(msg: &BorrowedMessage<'_>, limits: &EventLimits) -> Result<Event, String> {
    let payload = msg.payload().ok_or_else(|| "empty message".to_owned())?;
    limits
        .parse(payload, reference(msg))
        .map_err(|e| e.to_string())
}
