//! Everything that learns from the event log: the online trainer (Kafka consumer loop,
//! micro-batching, training steps on the engine's models, publishing of user vectors to
//! Redis or memory and item vectors to Kafka), the Parquet archive of the events topic,
//! and the nightly retrain that publishes model generations from it.

pub mod archive;
pub mod config;
pub mod error;
pub mod metrics;
pub mod online;
pub mod prequential;
pub mod replay;
pub mod retrain;
pub mod sink;

pub use config::TrainerConfig;
pub use error::{Result, RetryHint, TrainerError};
pub use online::{Check, Health, OnlineTrainer, TrainerStats};
