//! Errors of the trainer, each saying whether retrying can help.

use recsys_engine::EngineError;

/// Whether an operation that failed is worth retrying as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryHint {
    /// A broker or store is unreachable or slow; the same call may succeed later.
    Retry,
    /// The input or configuration is wrong; repeating it fails the same way.
    NoRetry,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("user vector store: {0}")]
    Store(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("training task failed: {0}")]
    Task(String),
}

impl TrainerError {
    pub fn retry_hint(&self) -> RetryHint {
        match self {
            Self::Kafka(_) | Self::Store(_) => RetryHint::Retry,
            Self::Config(_) | Self::Engine(_) | Self::Task(_) => RetryHint::NoRetry,
        }
    }
}

impl From<redis::RedisError> for TrainerError {
    fn from(e: redis::RedisError) -> Self {
        Self::Store(e.to_string())
    }
}

pub type Result<T, E = TrainerError> = std::result::Result<T, E>;
