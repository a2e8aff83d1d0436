//! Data contracts of recsys: the interaction event and its validation, its Arrow schema,
//! the HTTP bodies, and the names and encodings shared by trainer and serving.
//! Knows nothing of Kafka, Redis or HTTP libraries.

pub mod api;
pub mod arrow;
pub mod contract;
pub mod event;
pub mod item;

pub use event::{Event, EventError};
pub use item::ItemMeta;
