//! Errors of the trainer crate (online trainer, archive, nightly retrain), each saying
//! whether retrying can help.

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
    /// A file of the archive, a report or the models directory could not be read or
    /// written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error(transparent)]
    Schema(#[from] recsys_schemas::SchemaError),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// The data cannot do what was asked (an archive without a test day, no events, a
    /// rollback with nothing to roll back to); the message says what is missing.
    #[error("{0}")]
    Data(String),
    #[error("plot: {0}")]
    Plot(String),
}

impl TrainerError {
    pub fn retry_hint(&self) -> RetryHint {
        match self {
            Self::Kafka(_) | Self::Store(_) | Self::Io { .. } => RetryHint::Retry,
            Self::Config(_)
            | Self::Engine(_)
            | Self::Task(_)
            | Self::Parquet(_)
            | Self::Schema(_)
            | Self::Json(_)
            | Self::Data(_)
            | Self::Plot(_) => RetryHint::NoRetry,
        }
    }

    /// An I/O error about `path`.
    pub fn io(path: impl AsRef<std::path::Path>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.as_ref().display().to_string();
        move |source| Self::Io { path, source }
    }
}

impl From<redis::RedisError> for TrainerError {
    fn from(e: redis::RedisError) -> Self {
        Self::Store(e.to_string())
    }
}

impl From<recsys_index::IndexError> for TrainerError {
    fn from(e: recsys_index::IndexError) -> Self {
        Self::Engine(e.into())
    }
}

pub type Result<T, E = TrainerError> = std::result::Result<T, E>;
