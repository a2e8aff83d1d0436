//! The learning core of recsys: sparse embedding tables, the MF and two-tower models on
//! burn, their losses and checkpoints, popularity, offline and prequential metrics, the
//! synthetic generator. Knows nothing of HTTP, Kafka or Redis; the trainer and serving
//! crates bring those. What serving needs without burn (id maps, the FAISS index,
//! snapshots) is the `recsys-index` crate beneath this one.

pub mod checkpoint;
pub mod data;
pub mod device;
pub mod eval;
mod fused;
pub mod loss;
pub mod metrics;
pub mod mf;
pub mod model;
pub mod popularity;
pub mod refit;
pub mod synth;
pub mod table;
pub mod train;
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
    /// A snapshot or checkpoint could not be written, or was rejected on load (the
    /// message says why).
    #[error("snapshot {0}")]
    Snapshot(String),
    /// Input data cannot be read or used; the message names the file (and line) or what
    /// is missing.
    #[error("{0}")]
    Data(String),
}

impl From<recsys_index::IndexError> for EngineError {
    fn from(e: recsys_index::IndexError) -> Self {
        use recsys_index::IndexError as I;
        match e {
            I::Config(m) => Self::Config(m),
            I::Index(m) => Self::Index(m),
            I::Snapshot(m) => Self::Snapshot(m),
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
