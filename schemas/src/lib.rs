//! Data contracts of recsys: the interaction event and its validation, its Arrow schema,
//! the HTTP bodies, the names and encodings shared by trainer and serving, the
//! layered configuration file every process reads and the Kafka properties of every
//! client. Knows nothing of Kafka, Redis or HTTP libraries.

pub mod api;
pub mod arrow;
pub mod config;
pub mod contract;
mod error;
pub mod event;
pub mod histogram;
pub mod item;
pub mod kafka;

pub use error::{Result, SchemaError};
pub use event::{Event, EventLimits};
pub use item::ItemMeta;
pub use kafka::{KafkaClient, KafkaConfig};
