//! librdkafka's own check of the `[kafka]` table, run at start-up: each property is set on
//! a native configuration, so an unknown name or a bad value fails there, naming its key,
//! rather than when a client is first made.

use rdkafka::ClientConfig;
use recsys_schemas::KafkaConfig;

use crate::{Result, ServingError};

pub fn check(kafka: &KafkaConfig) -> Result<()> {
    kafka
        .validate()
        .map_err(|e| ServingError::Config(e.to_string()))?;
    for (key, value) in kafka.iter() {
        let one: ClientConfig = [(key.to_owned(), value.to_owned())].into_iter().collect();
        one.create_native_config()
            .map_err(|e| ServingError::Config(format!("kafka.{key}: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librdkafka_rejects_unknown_properties_and_bad_values_by_name() {
        let ok = KafkaConfig::from_pairs([
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.username", "recsys"),
            ("socket.timeout.ms", "30000"),
        ]);
        check(&ok).unwrap();
        let unknown = KafkaConfig::from_pairs([("sasl.usernme", "recsys")]);
        let err = check(&unknown).unwrap_err().to_string();
        assert!(err.contains("kafka.sasl.usernme"), "{err}");
        let bad = KafkaConfig::from_pairs([("socket.timeout.ms", "soon")]);
        let err = check(&bad).unwrap_err().to_string();
        assert!(err.contains("kafka.socket.timeout.ms"), "{err}");
    }
}
