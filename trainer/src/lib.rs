//! The online trainer: Kafka consumer loop, micro-batching, training steps on the engine's
//! MF model, and publishing of user vectors (Redis or in-memory) and item vectors.

pub mod config;
pub mod error;
pub mod online;
pub mod sink;

pub use config::TrainerConfig;
pub use error::{Result, RetryHint, TrainerError};
pub use online::{OnlineTrainer, TrainerStats};
