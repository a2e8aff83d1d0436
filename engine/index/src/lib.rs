//! What a serving replica needs of the engine, without the models or the training code
//! (no burn): string id maps, users' recent-item buffers and the in-memory user store,
//! the FAISS item index with exclusions and exact re-ranking, its base snapshots, and the
//! generation pointer of the models directory. The engine builds on it; serving needs
//! nothing else of it.

pub mod ann;
pub mod bytes;
pub mod fold_in;
pub mod generations;
pub mod ids;
pub mod snapshot;
pub mod store;
pub mod vector;

pub use ann::{FAISS_AVX2, IndexConfig, ItemIndex, check_cpu, single_threaded_searches};

/// Errors of the index crate. None of them is retryable by repeating the same call.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A setting is out of range; the message names the key.
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("index: {0}")]
    Index(String),
    /// A snapshot or the generation pointer could not be written, or was rejected on
    /// load (the message says why).
    #[error("snapshot {0}")]
    Snapshot(String),
}

pub type Result<T, E = IndexError> = std::result::Result<T, E>;
