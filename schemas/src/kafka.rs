//! The `[kafka]` section: librdkafka properties (`security.protocol`, `sasl.*`, `ssl.*`,
//! timeouts, ...) applied to every Kafka client recsys makes, and the one place that
//! lists each client's own settings. Call sites turn [`KafkaConfig::properties`] into an
//! `rdkafka::ClientConfig` (`.collect()`); nothing else sets Kafka properties.
//!
//! In TOML, `security.protocol = "SASL_SSL"` (a dotted key) and
//! `"security.protocol" = "SASL_SSL"` (a quoted one) name the same property; as an
//! environment variable, `RECSYS__KAFKA__SECURITY__PROTOCOL=SASL_SSL`, which overrides a
//! dotted key of the file (a quoted one and the variable together are an error: the
//! property is given twice).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Result, SchemaError};

/// Every Kafka client recsys makes, each with the settings its correctness depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KafkaClient {
    /// The online trainer's consumer of `events` (and `items`), in `trainer.group_id`.
    /// Positions come from checkpoints; the group's committed offsets only follow them.
    TrainerConsumer,
    /// The trainer's producer of rejected messages to the dead-letter topic.
    DeadLetterProducer,
    /// The trainer's producer of item vectors, tombstones and the popular list.
    ItemVectorProducer,
    /// `recsys archive`'s consumer of `events`; its positions live in the archive.
    ArchiveConsumer,
    /// A serving replica's reader of item vectors and popularity: no group, every replica
    /// reads every partition from offsets of its own.
    ReplicaConsumer,
    /// Serving's producer of `POST /v1/events` to the events topic.
    EventProducer,
    /// The demo's and the benchmarks' bulk producer of synthetic events.
    LoadProducer,
    /// Topic administration (the test and benchmark set-ups create their topics).
    Admin,
}

impl KafkaClient {
    pub const ALL: [KafkaClient; 8] = [
        Self::TrainerConsumer,
        Self::DeadLetterProducer,
        Self::ItemVectorProducer,
        Self::ArchiveConsumer,
        Self::ReplicaConsumer,
        Self::EventProducer,
        Self::LoadProducer,
        Self::Admin,
    ];

    /// This client's own settings, before the `[kafka]` table's.
    fn settings(self) -> &'static [(&'static str, &'static str)] {
        const MANUAL_POSITIONS: [(&str, &str); 3] = [
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "false"),
            ("auto.offset.reset", "earliest"),
        ];
        // An event reaches the trainer, and an item vector the replica, no later than this
        // after it was written, rather than librdkafka's 500 ms: measured with `recsys
        // bench freshness` on the mock cluster at 10,000 events/s, user p99 626-642 ms
        // at 500 and 247 ms at 100.
        const FETCH_WAIT: (&str, &str) = ("fetch.wait.max.ms", "100");
        match self {
            // Statistics every second feed the trainer's `/readyz` and its lag metrics.
            Self::TrainerConsumer => &[
                MANUAL_POSITIONS[0],
                MANUAL_POSITIONS[1],
                MANUAL_POSITIONS[2],
                FETCH_WAIT,
                ("statistics.interval.ms", "1000"),
            ],
            Self::ReplicaConsumer => &[
                MANUAL_POSITIONS[0],
                MANUAL_POSITIONS[1],
                MANUAL_POSITIONS[2],
                FETCH_WAIT,
            ],
            Self::ArchiveConsumer => &MANUAL_POSITIONS,
            Self::DeadLetterProducer => &[("message.timeout.ms", "10000")],
            // Per-key order must survive retries: a stale vector must never land after a
            // fresh one, nor a vector after its tombstone.
            Self::ItemVectorProducer => &[
                ("message.timeout.ms", "10000"),
                ("enable.idempotence", "true"),
                ("linger.ms", "5"),
            ],
            // A request waits for its events' acknowledgement: a short budget.
            Self::EventProducer => &[("message.timeout.ms", "5000"), ("linger.ms", "2")],
            Self::LoadProducer => &[
                ("linger.ms", "5"),
                ("queue.buffering.max.messages", "1000000"),
            ],
            Self::Admin => &[],
        }
    }
}

/// Properties recsys sets itself, from its own keys or because it depends on them.
const RESERVED: [(&str, &str); 6] = [
    (
        "bootstrap.servers",
        "set trainer.brokers (or serving.follow.brokers)",
    ),
    ("group.id", "set trainer.group_id (archive: --group)"),
    ("enable.auto.commit", "positions are committed by recsys"),
    ("enable.partition.eof", "recsys depends on its setting"),
    ("auto.offset.reset", "recsys depends on its setting"),
    (
        "enable.idempotence",
        "the item-vector producer depends on it",
    ),
];

/// Values never printed (`recsys config`, debug output).
fn secret(key: &str) -> bool {
    key.contains("password") || key.contains("secret") || key == "ssl.key.pem"
}

/// The `[kafka]` table, flattened to librdkafka property names.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaConfig {
    properties: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// A table of the given properties (as a config file would give them).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            properties: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The properties of the table, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Rejects the properties recsys sets itself, naming the key. Whether librdkafka
    /// knows the others is checked where a client library is at hand.
    pub fn validate(&self) -> Result<()> {
        for key in self.properties.keys() {
            if let Some((_, why)) = RESERVED.iter().find(|(k, _)| k == key) {
                return Err(SchemaError::Config(format!(
                    "kafka.{key}: not settable here ({why})"
                )));
            }
            if key.is_empty() || key.split('.').any(str::is_empty) {
                return Err(SchemaError::Config(format!(
                    "kafka.{key}: not a property name"
                )));
            }
        }
        Ok(())
    }

    /// Every property of `client`: the brokers, the group (consumers in a group), the
    /// client's own settings, then this table's.
    pub fn properties(
        &self,
        client: KafkaClient,
        brokers: &str,
        group_id: Option<&str>,
    ) -> Vec<(String, String)> {
        let mut out = vec![("bootstrap.servers".to_owned(), brokers.to_owned())];
        if let Some(group) = group_id {
            out.push(("group.id".to_owned(), group.to_owned()));
        }
        out.extend(
            client
                .settings()
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        out.extend(self.properties.iter().map(|(k, v)| (k.clone(), v.clone())));
        out
    }

    fn shown(&self) -> BTreeMap<&str, &str> {
        self.properties
            .iter()
            .map(|(k, v)| {
                let v = if secret(k) { "[redacted]" } else { v.as_str() };
                (k.as_str(), v)
            })
            .collect()
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.shown()).finish()
    }
}

/// Printed flat and quoted (`"sasl.username" = "..."`), secrets redacted.
impl Serialize for KafkaConfig {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.shown().serialize(s)
    }
}

/// A property's value as TOML gives it: a scalar, or a table of dotted-key parts.
#[derive(Deserialize)]
#[serde(untagged)]
enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Table(BTreeMap<String, Value>),
}

fn flatten(
    prefix: &str,
    table: BTreeMap<String, Value>,
    out: &mut BTreeMap<String, String>,
) -> std::result::Result<(), String> {
    for (part, value) in table {
        let key = if prefix.is_empty() {
            part
        } else {
            format!("{prefix}.{part}")
        };
        let scalar = match value {
            Value::Table(inner) => {
                flatten(&key, inner, out)?;
                continue;
            }
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(x) => x.to_string(),
            Value::Str(s) => s,
        };
        if out.insert(key.clone(), scalar).is_some() {
            return Err(format!("kafka.{key}: given twice"));
        }
    }
    Ok(())
}

impl<'de> Deserialize<'de> for KafkaConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let table = BTreeMap::<String, Value>::deserialize(d)?;
        let mut properties = BTreeMap::new();
        flatten("", table, &mut properties).map_err(serde::de::Error::custom)?;
        Ok(Self { properties })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct File {
        kafka: KafkaConfig,
    }

    fn load(text: &str, env: &[(&str, &str)]) -> Result<KafkaConfig> {
        let mut f = tempfile_path(text);
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let file: File = crate::config::load_layered(Some(f.as_path()), env)?;
        std::fs::remove_file(&mut f).ok();
        Ok(file.kafka)
    }

    fn tempfile_path(text: &str) -> std::path::PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "recsys-kafka-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn dotted_quoted_and_env_keys_flatten_to_property_names() {
        let kafka = load(
            "[kafka]\nsecurity.protocol = \"SASL_SSL\"\n\"sasl.mechanism\" = \"PLAIN\"\n\
             socket.timeout.ms = 30000\nssl.endpoint.identification.algorithm = \"none\"\n",
            &[("RECSYS__KAFKA__SASL__USERNAME", "alice")],
        )
        .unwrap();
        let got: Vec<(&str, &str)> = kafka.iter().collect();
        assert_eq!(
            got,
            [
                ("sasl.mechanism", "PLAIN"),
                ("sasl.username", "alice"),
                ("security.protocol", "SASL_SSL"),
                ("socket.timeout.ms", "30000"),
                ("ssl.endpoint.identification.algorithm", "none"),
            ]
        );
        kafka.validate().unwrap();
    }

    #[test]
    fn a_property_given_twice_or_reserved_is_named() {
        let err = load(
            "[kafka]\nsasl.username = \"a\"\n\"sasl.username\" = \"b\"\n",
            &[],
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("kafka.sasl.username: given twice"),
            "{err}"
        );
        let reserved = KafkaConfig::from_pairs([("bootstrap.servers", "x:1")]);
        let err = reserved.validate().unwrap_err().to_string();
        assert!(
            err.contains("kafka.bootstrap.servers") && err.contains("trainer.brokers"),
            "{err}"
        );
    }

    #[test]
    fn every_client_gets_the_table_after_its_own_settings() {
        let kafka = KafkaConfig::from_pairs([
            ("security.protocol", "SASL_PLAINTEXT"),
            ("message.timeout.ms", "30000"),
        ]);
        for client in KafkaClient::ALL {
            let props = kafka.properties(client, "b:9092", Some("g"));
            let last = |key: &str| {
                props
                    .iter()
                    .rev()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(last("bootstrap.servers"), Some("b:9092"), "{client:?}");
            assert_eq!(last("group.id"), Some("g"), "{client:?}");
            assert_eq!(
                last("security.protocol"),
                Some("SASL_PLAINTEXT"),
                "{client:?}"
            );
            // The table is applied last, so it tunes a client's own timeout.
            assert_eq!(last("message.timeout.ms"), Some("30000"), "{client:?}");
        }
        let vectors = kafka.properties(KafkaClient::ItemVectorProducer, "b:9092", None);
        assert!(vectors.contains(&("enable.idempotence".into(), "true".into())));
    }

    #[test]
    fn secrets_are_not_printed() {
        let kafka = KafkaConfig::from_pairs([("sasl.password", "hunter2"), ("sasl.username", "a")]);
        let shown = format!("{kafka:?} {}", toml::to_string(&kafka).unwrap());
        assert!(
            !shown.contains("hunter2") && shown.contains("[redacted]"),
            "{shown}"
        );
        assert!(shown.contains("\"sasl.username\" = \"a\""), "{shown}");
        let props = kafka.properties(KafkaClient::EventProducer, "b:1", None);
        assert!(props.contains(&("sasl.password".into(), "hunter2".into())));
    }
}
