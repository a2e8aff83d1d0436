//! The HTTP API of recsys: recommendations from user vectors and the FAISS item index,
//! with fallbacks (fold-in, popular) instead of errors when a user has no vector or the
//! user store fails.

pub mod api;
pub mod catalog;
pub mod config;
pub mod error;
pub mod follow;
pub mod search;
pub mod store;

use std::net::SocketAddr;

use actix_web::{App, HttpServer, dev::Server, web};

pub use api::AppState;
pub use catalog::{Catalog, CatalogHolder};
pub use config::ServingConfig;
pub use error::{Result, ServingError};
pub use follow::{FollowConfig, FollowStatus, ItemFollower};
pub use store::{RedisUserVectorStore, StoreError, UserVectorStore};

/// Binds the API on `state.cfg.bind` and returns the running server (poll or spawn it)
/// and the address it actually listens on (port 0 picks a free port).
pub fn start(state: AppState) -> std::io::Result<(Server, SocketAddr)> {
    let bind = state.cfg.bind.clone();
    let workers = state.cfg.workers;
    let data = web::Data::new(state);
    let mut server =
        HttpServer::new(move || App::new().app_data(data.clone()).configure(api::configure))
            .disable_signals()
            .shutdown_timeout(5);
    if workers > 0 {
        server = server.workers(workers);
    }
    let server = server.bind(&bind)?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("server bound no address"))?;
    Ok((server.run(), addr))
}
