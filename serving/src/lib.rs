//! The HTTP API of recsys: recommendations from user vectors and the FAISS item index,
//! with fallbacks (fold-in, popular) instead of errors when a user has no vector or the
//! user store fails. `recsys-serve` (this crate's binary) is one replica; the root
//! `recsys` binary embeds the same server in `recsys run` and `recsys serve`.

pub mod api;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod error;
pub mod events;
pub mod follow;
pub mod kafka;
pub mod limits;
pub mod metrics;
pub mod replica;
mod resp;
pub mod search;
mod server;
pub mod store;
mod tls;

pub use api::{AppState, Companion};
pub use auth::{AuthConfig, Role};
pub use catalog::{Catalog, CatalogHolder};
pub use config::{ServingConfig, StoreConfig};
pub use error::{Result, ServingError};
pub use events::{EventSink, KafkaEventSink};
pub use follow::{FollowConfig, FollowStatus, ItemFollower};
pub use server::start;
pub use store::{RedisUserVectorStore, UserVectorStore};
