//! Contracts between processes: topic names, the Redis key format of user vectors and the
//! byte encoding of vectors. The trainer writes these, serving reads them; both import them
//! from here so the two halves cannot drift apart.

/// Interaction events, JSON, key = user id.
pub const EVENTS_TOPIC: &str = "events";
/// Events that failed to parse or validate, with the reason in a header.
pub const DEAD_LETTER_TOPIC: &str = "events-dlq";

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
}
