//! What comes in: a Kafka message parsed and validated into an event or an item
//! update, or sent to the dead-letter topic with its source and the reason.

use std::time::Duration;

use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use recsys_schemas::{Event, ItemMeta};
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

/// Parses an `items` message; the error is the dead-letter reason.
pub(super) fn parse_item(msg: &BorrowedMessage<'_>) -> Result<ItemMeta, String> {
    let payload = msg.payload().ok_or_else(|| "empty message".to_owned())?;
    let default_ts = msg.timestamp().to_millis().unwrap_or(0);
    ItemMeta::from_json(payload, default_ts).map_err(|e| e.to_string())
}

/// Parses a Kafka message into a validated event; the error is the dead-letter reason.
pub(super) fn parse(msg: &BorrowedMessage<'_>) -> Result<Event, String> {
    let payload = msg.payload().ok_or_else(|| "empty message".to_owned())?;
    let default_ts = msg.timestamp().to_millis().unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    });
    Event::from_json(payload, default_ts).map_err(|e| e.to_string())
}
