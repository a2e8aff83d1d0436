//! The interaction event: what producers write to the `events` topic (one JSON object per
//! message) and what `POST /v1/events` accepts. Parsing and validation live together so
//! that every entry point rejects the same inputs with the same field-naming message.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Result, SchemaError};

/// Longest user or item id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest `kind` and `event_id`, in bytes.
pub const MAX_TAG_BYTES: usize = 64;

/// `[events]`: the bounds on an event's `weight` and `ts` (and an item message's `ts`)
/// that every entry point enforces beside the parse rules: the trainer's consumer, the
/// archiver and `POST /v1/events`. They keep one event from reaching beyond itself: a far
/// future `ts` would otherwise become the trainer's clock (freezing the decayed popular
/// list and expiring every id), a timestamp in seconds the archive's oldest day, and a
/// huge weight the whole of a batch's loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventLimits {
    /// Largest `weight` accepted (the smallest is anything above 0).
    pub max_weight: f32,
    /// Oldest `ts` accepted, as seconds before the reference time (0: no limit). The
    /// reference is the receiver's clock, or the Kafka message's timestamp when that is
    /// earlier, so an event queued in a backlog is judged by when it was produced.
    pub max_age_s: u64,
    /// Newest `ts` accepted, as seconds after the reference time (clock skew allowed).
    pub max_future_s: u64,
}

impl Default for EventLimits {
    fn default() -> Self {
        Self {
            max_weight: 100.0,
            max_age_s: 30 * 86_400,
            max_future_s: 600,
        }
    }
}

impl EventLimits {
    /// No bound on how old `ts` may be (replays of history, whose times are long past);
    /// the usual bounds on the future and on `weight`.
    pub fn replay() -> Self {
        Self {
            max_age_s: 0,
            ..Self::default()
        }
    }

    /// Refuses a configuration that could not accept any event; names the key.
    pub fn validate(&self) -> Result<()> {
        if !(self.max_weight.is_finite() && self.max_weight > 0.0) {
            return Err(SchemaError::Config(format!(
                "events.max_weight: must be a positive finite number, got {}",
                self.max_weight
            )));
        }
        Ok(())
    }

    /// The reference time of a message received now (`now_ms`) carrying Kafka timestamp
    /// `message_ms`: the earlier of the two.
    pub fn reference(now_ms: i64, message_ms: Option<i64>) -> i64 {
        message_ms.map_or(now_ms, |m| m.min(now_ms))
    }

    /// Checks `ts` against the window around `reference_ms`.
    pub fn check_ts(&self, ts: i64, reference_ms: i64) -> Result<()> {
        let future = i64::try_from(self.max_future_s.saturating_mul(1000)).unwrap_or(i64::MAX);
        if ts > reference_ms.saturating_add(future) {
            return Err(SchemaError::field(
                "ts",
                format!(
                    "{ts} is more than events.max_future_s = {} s after the receiver's clock \
                     ({reference_ms}); is it in microseconds?",
                    self.max_future_s
                ),
            ));
        }
        if self.max_age_s > 0 {
            let age = i64::try_from(self.max_age_s.saturating_mul(1000)).unwrap_or(i64::MAX);
            if ts < reference_ms.saturating_sub(age) {
                return Err(SchemaError::field(
                    "ts",
                    format!(
                        "{ts} is more than events.max_age_s = {} s before the receiver's \
                         clock ({reference_ms}); is it in seconds?",
                        self.max_age_s
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Parses and validates one event (see [`Event::from_json`]), then checks it against
    /// these bounds: what every entry point that reads events from Kafka calls.
    pub fn parse(&self, bytes: &[u8], reference_ms: i64) -> Result<Event> {
        let event = Event::from_json(bytes, reference_ms)?;
        self.check(&event, reference_ms)?;
        Ok(event)
    }

    /// The same for an already-parsed JSON object (`POST /v1/events`).
    pub fn parse_map(&self, map: &Map<String, Value>, reference_ms: i64) -> Result<Event> {
        let event = Event::from_map(map, reference_ms)?;
        self.check(&event, reference_ms)?;
        Ok(event)
    }

    /// Checks a parsed event's `weight` and `ts`.
    pub fn check(&self, event: &Event, reference_ms: i64) -> Result<()> {
        if event.weight > self.max_weight {
            return Err(SchemaError::field(
                "weight",
                format!(
                    "{} is above events.max_weight = {}",
                    event.weight, self.max_weight
                ),
            ));
        }
        self.check_ts(event.ts, reference_ms)
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A validated interaction of a user with an item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    pub user_id: String,
    pub item_id: String,
    /// `view`, `click`, `purchase`, ...; `interaction` when the producer does not say.
    pub kind: String,
    /// Strength of the signal; above 0 and at most [`EventLimits::max_weight`]. Defaults
    /// by kind (see [`default_weight`]).
    pub weight: f32,
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    /// Producer-chosen id used to drop duplicates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

/// Weight of an event whose producer gave none: stronger signals for stronger actions.
pub fn default_weight(kind: &str) -> f32 {
    match kind {
        "view" | "impression_click" => 0.5,
        "like" | "add_to_cart" | "share" => 2.0,
        "purchase" | "order" => 4.0,
        _ => 1.0,
    }
}

impl Event {
    /// Parses and validates one event. `default_ts` (ms) is used when the event carries no
    /// `ts`: for Kafka messages the message timestamp, for HTTP the time of receipt.
    pub fn from_json(bytes: &[u8], default_ts: i64) -> Result<Self> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| SchemaError::Json(e.to_string()))?;
        match value {
            Value::Object(map) => Self::from_map(&map, default_ts),
            _ => Err(SchemaError::NotAnObject),
        }
    }

    /// Validates an already-parsed JSON object (unknown keys are ignored).
    pub fn from_map(map: &Map<String, Value>, default_ts: i64) -> Result<Self> {
        let user_id = id_field(map, "user_id")?;
        let item_id = id_field(map, "item_id")?;
        let kind = match map.get("kind") {
            None | Some(Value::Null) => "interaction".to_owned(),
            Some(Value::String(s)) => tag(s, "kind")?,
            Some(_) => return Err(SchemaError::field("kind", "must be a string")),
        };
        let weight = match map.get("weight") {
            None | Some(Value::Null) => default_weight(&kind),
            Some(Value::Number(n)) => {
                let w = n
                    .as_f64()
                    .ok_or_else(|| SchemaError::field("weight", "must be a number"))?;
                let w32 = w as f32;
                if !w.is_finite() || !w32.is_finite() {
                    return Err(SchemaError::field("weight", "must be a finite number"));
                }
                if w32 <= 0.0 {
                    return Err(SchemaError::field(
                        "weight",
                        format!("must be above 0, got {w}"),
                    ));
                }
                w32
            }
            Some(_) => return Err(SchemaError::field("weight", "must be a number")),
        };
        let ts = match map.get("ts") {
            None | Some(Value::Null) => default_ts,
            Some(Value::Number(n)) => n.as_i64().ok_or_else(|| {
                SchemaError::field("ts", "must be an integer (milliseconds since the epoch)")
            })?,
            Some(_) => {
                return Err(SchemaError::field(
                    "ts",
                    "must be an integer (milliseconds since the epoch)",
                ));
            }
        };
        if ts < 0 {
            return Err(SchemaError::field("ts", "must not be negative"));
        }
        let event_id = match map.get("event_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(tag(s, "event_id")?),
            Some(_) => return Err(SchemaError::field("event_id", "must be a string")),
        };
        Ok(Self {
            user_id,
            item_id,
            kind,
            weight,
            ts,
            event_id,
        })
    }

    /// Validates a constructed event (for events built in code rather than parsed).
    pub fn validate(&self) -> Result<()> {
        check_id(&self.user_id, "user_id")?;
        check_id(&self.item_id, "item_id")?;
        if !self.weight.is_finite() {
            return Err(SchemaError::field("weight", "must be a finite number"));
        }
        if self.ts < 0 {
            return Err(SchemaError::field("ts", "must not be negative"));
        }
        Ok(())
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serialising a struct of strings and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

pub(crate) fn id_field(map: &Map<String, Value>, field: &'static str) -> Result<String> {
    match map.get(field) {
        None | Some(Value::Null) => Err(SchemaError::field(field, "is required")),
        Some(Value::String(s)) => {
            check_id(s, field)?;
            Ok(s.clone())
        }
        Some(_) => Err(SchemaError::field(field, "must be a string")),
    }
}

fn check_id(id: &str, field: &'static str) -> Result<()> {
    if id.is_empty() {
        return Err(SchemaError::field(field, "must not be empty"));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(SchemaError::field(
            field,
            format!("is {} bytes, longer than {MAX_ID_BYTES}", id.len()),
        ));
    }
    Ok(())
}

pub(crate) fn tag(s: &str, field: &'static str) -> Result<String> {
    if s.is_empty() || s.len() > MAX_TAG_BYTES {
        return Err(SchemaError::field(
            field,
            format!("must be 1..={MAX_TAG_BYTES} bytes"),
        ));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Event> {
        Event::from_json(s.as_bytes(), 1_000)
    }

    fn field_of(s: &str) -> &'static str {
        parse(s).unwrap_err().field_name().expect("a field error")
    }

    #[test]
    fn minimal_event_takes_defaults() {
        let e = parse(r#"{"user_id":"u1","item_id":"i9","extra":[1,2]}"#).unwrap();
        assert_eq!(e.kind, "interaction");
        assert_eq!(e.weight, 1.0);
        assert_eq!(e.ts, 1_000);
        assert_eq!(e.event_id, None);
    }

    #[test]
    fn weight_defaults_by_kind() {
        let e = parse(r#"{"user_id":"u","item_id":"i","kind":"purchase"}"#).unwrap();
        assert_eq!(e.weight, 4.0);
        let e = parse(r#"{"user_id":"u","item_id":"i","kind":"purchase","weight":0.25}"#).unwrap();
        assert_eq!(e.weight, 0.25);
    }

    #[test]
    fn rejects_empty_user_id() {
        assert_eq!(field_of(r#"{"user_id":"","item_id":"i"}"#), "user_id");
    }

    #[test]
    fn rejects_empty_item_id() {
        assert_eq!(field_of(r#"{"user_id":"u","item_id":""}"#), "item_id");
    }

    #[test]
    fn rejects_missing_ids() {
        assert_eq!(field_of(r#"{"item_id":"i"}"#), "user_id");
        assert_eq!(field_of(r#"{"user_id":"u"}"#), "item_id");
    }

    #[test]
    fn rejects_id_longer_than_256_bytes() {
        let ok = "x".repeat(MAX_ID_BYTES);
        assert!(parse(&format!(r#"{{"user_id":"{ok}","item_id":"i"}}"#)).is_ok());
        let long = "x".repeat(MAX_ID_BYTES + 1);
        let err = parse(&format!(r#"{{"user_id":"u","item_id":"{long}"}}"#)).unwrap_err();
        assert_eq!(err.field_name(), Some("item_id"));
        assert!(err.to_string().contains("257 bytes"), "{err}");
    }

    #[test]
    fn rejects_non_finite_weight() {
        // JSON has no NaN literal; an overflowing literal is the way one arrives.
        assert_eq!(
            field_of(r#"{"user_id":"u","item_id":"i","weight":1e39}"#),
            "weight"
        );
        let mut e = parse(r#"{"user_id":"u","item_id":"i"}"#).unwrap();
        e.weight = f32::NAN;
        assert_eq!(e.validate().unwrap_err().field_name(), Some("weight"));
    }

    #[test]
    fn rejects_weight_that_is_not_positive() {
        for w in ["0", "-1", "-0.5"] {
            let json = format!(r#"{{"user_id":"u","item_id":"i","weight":{w}}}"#);
            assert_eq!(field_of(&json), "weight", "{w}");
        }
    }

    #[test]
    fn limits_bound_weight_and_both_sides_of_ts() {
        let limits = EventLimits::default();
        let now = 1_767_225_600_000; // 2026-01-01
        let event = |weight: f32, ts: i64| Event {
            weight,
            ts,
            ..parse(r#"{"user_id":"u","item_id":"i"}"#).unwrap()
        };
        limits.check(&event(100.0, now), now).unwrap();
        limits.check(&event(1.0, now + 600_000), now).unwrap();
        limits
            .check(&event(1.0, now - 30 * 86_400_000), now)
            .unwrap();
        let named = |e: Event| limits.check(&e, now).unwrap_err().to_string();
        assert!(named(event(101.0, now)).contains("events.max_weight"));
        // Microseconds and seconds: the two usual wrong units.
        assert!(named(event(1.0, now * 1000)).contains("events.max_future_s"));
        assert!(named(event(1.0, now / 1000)).contains("events.max_age_s"));
        assert_eq!(
            limits
                .check(&event(1.0, i64::MAX), now)
                .unwrap_err()
                .field_name(),
            Some("ts")
        );
        // Replays take any past time, not the future; the reference is the earlier of
        // clock and message.
        EventLimits::replay().check(&event(1.0, 5), now).unwrap();
        assert!(
            EventLimits::replay()
                .check(&event(1.0, now * 1000), now)
                .is_err()
        );
        assert_eq!(EventLimits::reference(now, Some(now - 5)), now - 5);
        assert_eq!(EventLimits::reference(now, Some(i64::MAX)), now);
        assert_eq!(EventLimits::reference(now, None), now);
        let bad = EventLimits {
            max_weight: 0.0,
            ..limits
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("events.max_weight")
        );
    }

    #[test]
    fn rejects_weight_of_wrong_type() {
        assert_eq!(
            field_of(r#"{"user_id":"u","item_id":"i","weight":"heavy"}"#),
            "weight"
        );
    }

    #[test]
    fn rejects_timestamp_that_is_not_an_integer() {
        assert_eq!(field_of(r#"{"user_id":"u","item_id":"i","ts":1.5}"#), "ts");
        assert_eq!(
            field_of(r#"{"user_id":"u","item_id":"i","ts":"2026-01-01"}"#),
            "ts"
        );
        assert_eq!(field_of(r#"{"user_id":"u","item_id":"i","ts":-5}"#), "ts");
    }

    #[test]
    fn rejects_ids_of_wrong_type_and_non_objects() {
        assert_eq!(field_of(r#"{"user_id":7,"item_id":"i"}"#), "user_id");
        assert_eq!(parse("[1]").unwrap_err(), SchemaError::NotAnObject);
        assert!(matches!(parse("{nope"), Err(SchemaError::Json(_))));
    }

    #[test]
    fn json_round_trip() {
        let e = parse(r#"{"user_id":"u","item_id":"i","kind":"click","ts":42,"event_id":"e1"}"#)
            .unwrap();
        assert_eq!(Event::from_json(&e.to_json(), 0).unwrap(), e);
    }
}
