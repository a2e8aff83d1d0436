//! Contracts between processes: topic names, the Redis key format of user vectors and the
//! byte encoding of vectors. The trainer writes these, serving reads them; both import them
//! from here so the two halves cannot drift apart.

use crate::{Result, SchemaError};

/// Interaction events, JSON, key = user id.
pub const EVENTS_TOPIC: &str = "events";
/// Item metadata ([`crate::ItemMeta`]), JSON, key = item id.
pub const ITEMS_TOPIC: &str = "items";
/// Events that failed to parse or validate, with the reason in a header.
pub const DEAD_LETTER_TOPIC: &str = "events-dlq";
/// Item vectors, compacted, key = item id, value = [`ItemVectorMessage`] encoded by
/// [`ItemVectorMessage::encode`]; an empty (null) value is a tombstone: the item is removed.
pub const ITEM_VECTORS_TOPIC: &str = "item-vectors";

/// The popular list for the fallback path, compacted, one key ([`POPULAR_KEY`]), value =
/// [`PopularMessage`] as JSON; replicas keep the newest.
pub const POPULAR_TOPIC: &str = "item-popularity";
pub const POPULAR_KEY: &str = "popular";

/// Most popular items first, with decayed scores, of one model generation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PopularMessage {
    pub generation: u64,
    pub ts_ms: i64,
    pub items: Vec<(String, f32)>,
}

/// One item's vector as published on [`ITEM_VECTORS_TOPIC`].
#[derive(Debug, Clone, PartialEq)]
pub struct ItemVectorMessage {
    /// The model generation the vector belongs to; replicas ignore other generations.
    pub generation: u64,
    /// Milliseconds since the epoch when the trainer published it.
    pub ts_ms: i64,
    pub vector: Vec<f32>,
}

impl ItemVectorMessage {
    const VERSION: u8 = 1;
    const HEADER: usize = 1 + 8 + 8 + 4;

    /// `version: u8 = 1 | generation: u64 | ts_ms: i64 | dim: u32 | dim × f32`, all
    /// little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::HEADER + 4 * self.vector.len());
        out.push(Self::VERSION);
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&self.ts_ms.to_le_bytes());
        out.extend_from_slice(&(self.vector.len() as u32).to_le_bytes());
        out.extend(self.vector.iter().flat_map(|x| x.to_le_bytes()));
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < Self::HEADER {
            return Err(SchemaError::ItemVectorShort(bytes.len()));
        }
        if bytes[0] != Self::VERSION {
            return Err(SchemaError::ItemVectorVersion(bytes[0]));
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            b
        };
        let generation = u64::from_le_bytes(u64_at(1));
        let ts_ms = i64::from_le_bytes(u64_at(9));
        let dim = u32::from_le_bytes([bytes[17], bytes[18], bytes[19], bytes[20]]) as usize;
        let body = &bytes[Self::HEADER..];
        if body.len() != dim * 4 {
            return Err(SchemaError::ItemVectorLength {
                dim,
                bytes: body.len(),
            });
        }
        let vector = decode_vector(body).unwrap_or_default();
        if vector.iter().any(|x| !x.is_finite()) {
            return Err(SchemaError::ItemVectorNonFinite);
        }
        Ok(Self {
            generation,
            ts_ms,
            vector,
        })
    }
}

/// Redis key of a user's vector in model generation `generation`.
pub fn user_vector_key(generation: u64, user_id: &str) -> String {
    format!("u:{generation}:{user_id}")
}

/// Redis key of a user's recent item ids (a list, newest first, bounded by the trainer).
/// Histories do not depend on the model generation.
pub fn user_history_key(user_id: &str) -> String {
    format!("h:{user_id}")
}

/// Encodes a vector as little-endian `f32`s.
pub fn encode_vector(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Decodes little-endian `f32`s; `None` when the length is not a multiple of four.
pub fn decode_vector(bytes: &[u8]) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_round_trip_and_bad_length() {
        let v = vec![1.5, -0.0, f32::MIN_POSITIVE, 3e7];
        assert_eq!(decode_vector(&encode_vector(&v)).unwrap(), v);
        assert_eq!(decode_vector(&[0, 0, 128]), None);
        assert_eq!(user_vector_key(3, "alice"), "u:3:alice");
    }

    #[test]
    fn item_vector_message_round_trip_and_rejections() {
        let m = ItemVectorMessage {
            generation: 7,
            ts_ms: 1_767_225_600_000,
            vector: vec![0.25, -1.0, 3.5],
        };
        let bytes = m.encode();
        assert_eq!(bytes.len(), 21 + 12);
        assert_eq!(ItemVectorMessage::decode(&bytes).unwrap(), m);
        assert_eq!(
            ItemVectorMessage::decode(&bytes[..20]),
            Err(SchemaError::ItemVectorShort(20))
        );
        assert_eq!(
            ItemVectorMessage::decode(&bytes[..bytes.len() - 1]),
            Err(SchemaError::ItemVectorLength { dim: 3, bytes: 11 })
        );
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert_eq!(
            ItemVectorMessage::decode(&v2),
            Err(SchemaError::ItemVectorVersion(2))
        );
        let nan = ItemVectorMessage {
            vector: vec![f32::NAN],
            ..m
        };
        assert_eq!(
            ItemVectorMessage::decode(&nan.encode()),
            Err(SchemaError::ItemVectorNonFinite)
        );
    }
}
