//! Item metadata: what catalog services write to the `items` topic (one JSON object per
//! message, key = item id). A hidden item is never recommended: the trainer removes it
//! from the item-vector topic (a tombstone) and from snapshots until it is shown again.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::event::{id_field, tag};
use crate::{Result, SchemaError};

/// Most categories one item may carry.
pub const MAX_CATEGORIES: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemMeta {
    pub item_id: String,
    /// Categorical features (genre, brand, ...), each 1..=64 bytes.
    #[serde(default)]
    pub categories: Vec<String>,
    /// Hidden items are never recommended.
    #[serde(default)]
    pub hidden: bool,
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
}

impl ItemMeta {
    /// Parses and validates one message; errors name the field, as for events.
    pub fn from_json(bytes: &[u8], default_ts: i64) -> Result<Self> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| SchemaError::Json(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(SchemaError::NotAnObject);
        };
        Self::from_map(&map, default_ts)
    }

    pub fn from_map(map: &Map<String, Value>, default_ts: i64) -> Result<Self> {
        let item_id = id_field(map, "item_id")?;
        let categories = match map.get("categories") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => {
                if list.len() > MAX_CATEGORIES {
                    return Err(SchemaError::field(
                        "categories",
                        format!("has {} entries, more than {MAX_CATEGORIES}", list.len()),
                    ));
                }
                list.iter()
                    .map(|c| match c {
                        Value::String(s) => tag(s, "categories"),
                        _ => Err(SchemaError::field("categories", "must be strings")),
                    })
                    .collect::<Result<_, _>>()?
            }
            Some(_) => {
                return Err(SchemaError::field(
                    "categories",
                    "must be an array of strings",
                ));
            }
        };
        let hidden = match map.get("hidden") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(SchemaError::field("hidden", "must be true or false")),
        };
        let ts = match map.get("ts") {
            None | Some(Value::Null) => default_ts,
            Some(Value::Number(n)) => n.as_i64().filter(|t| *t >= 0).ok_or_else(|| {
                SchemaError::field("ts", "must be a non-negative integer (ms since the epoch)")
            })?,
            Some(_) => {
                return Err(SchemaError::field(
                    "ts",
                    "must be a non-negative integer (ms since the epoch)",
                ));
            }
        };
        Ok(Self {
            item_id,
            categories,
            hidden,
            ts,
        })
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(json: &str) -> Option<&'static str> {
        ItemMeta::from_json(json.as_bytes(), 5)
            .unwrap_err()
            .field_name()
    }

    #[test]
    fn parses_defaults_and_round_trips() {
        let m = ItemMeta::from_json(br#"{"item_id":"i1"}"#, 5).unwrap();
        assert_eq!((m.hidden, m.ts, m.categories.len()), (false, 5, 0));
        let m = ItemMeta::from_json(
            br#"{"item_id":"i1","categories":["books","sf"],"hidden":true,"ts":9,"x":1}"#,
            5,
        )
        .unwrap();
        assert_eq!(m.categories, vec!["books", "sf"]);
        assert!(m.hidden);
        assert_eq!(ItemMeta::from_json(&m.to_json(), 0).unwrap(), m);
    }

    #[test]
    fn each_rule_names_its_field() {
        assert_eq!(field_of(r#"{"item_id":""}"#), Some("item_id"));
        assert_eq!(field_of(r#"{"hidden":true}"#), Some("item_id"));
        assert_eq!(
            field_of(r#"{"item_id":"i","hidden":"yes"}"#),
            Some("hidden")
        );
        assert_eq!(
            field_of(r#"{"item_id":"i","categories":"a"}"#),
            Some("categories")
        );
        assert_eq!(
            field_of(r#"{"item_id":"i","categories":[1]}"#),
            Some("categories")
        );
        assert_eq!(
            field_of(r#"{"item_id":"i","categories":[""]}"#),
            Some("categories")
        );
        assert_eq!(field_of(r#"{"item_id":"i","ts":-1}"#), Some("ts"));
        assert_eq!(field_of(r#"{"item_id":"i","ts":1.5}"#), Some("ts"));
        assert!(matches!(
            ItemMeta::from_json(b"[]", 0),
            Err(SchemaError::NotAnObject)
        ));
    }
}
