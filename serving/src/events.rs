//! Where `POST /v1/events` sends accepted events: the `events` topic (key = user id), or
//! anything else behind the same small trait.

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use recsys_schemas::{KafkaClient, KafkaConfig};

use crate::{Result, ServingError};

#[async_trait]
pub trait EventSink: Send + Sync {
    /// Sends `(key, payload)` messages and waits until each is acknowledged; fails with
    /// [`ServingError::Unavailable`] naming the topic and the cause.
    async fn send(&self, messages: Vec<(String, Vec<u8>)>) -> Result<()>;
}

pub struct KafkaEventSink {
    producer: FutureProducer,
    topic: String,
}

impl KafkaEventSink {
    pub fn new(kafka: &KafkaConfig, brokers: &str, topic: &str) -> Result<Self> {
        let producer = kafka
            .properties(KafkaClient::EventProducer, brokers, None)
            .into_iter()
            .collect::<ClientConfig>()
            .create()
            .map_err(|e| ServingError::Config(format!("kafka producer: {e}")))?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
        })
    }
}

#[async_trait]
impl EventSink for KafkaEventSink {
    async fn send(&self, messages: Vec<(String, Vec<u8>)>) -> Result<()> {
        let sends = messages.iter().map(|(key, payload)| {
            self.producer.send(
                FutureRecord::to(&self.topic).key(key).payload(payload),
                Duration::from_secs(5),
            )
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|(e, _)| {
                ServingError::Unavailable(format!("producing to {}: {e}", self.topic))
            })?;
        }
        Ok(())
    }
}
