//! The core of recsys: id maps, sparse embedding tables, the MF model on burn, the FAISS
//! item index, popularity, metrics and synthetic data. Knows nothing of HTTP, Kafka or
//! Redis; the trainer and serving crates bring those.

mod bytes;
pub mod checkpoint;
pub mod device;
pub mod eval;
mod fused;
pub mod generations;
pub mod ids;
pub mod index;
pub mod loss;
pub mod metrics;
pub mod mf;
pub mod model;
pub mod popularity;
pub mod snapshot;
pub mod store;
pub mod synth;
pub mod table;
pub mod two_tower;

/// Errors of the engine. None of them is retryable by repeating the same call.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A setting is out of range; the message names the key.
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("tensor operation failed: {0}")]
    Tensor(String),
    #[error("index: {0}")]
    Index(String),
    /// A snapshot could not be written, or was rejected on load (the message says why).
    #[error("snapshot {0}")]
    Snapshot(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
