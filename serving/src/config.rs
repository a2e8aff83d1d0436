//! Serving settings (the `[serving]` section of the config file).

use serde::{Deserialize, Serialize};

use crate::ServingError;
use crate::follow::FollowConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServingConfig {
    /// Address the HTTP API listens on.
    pub bind: String,
    /// Largest `k` a request may ask for.
    pub max_k: usize,
    /// `k` when the request gives none.
    pub default_k: usize,
    /// Budget for one user-store lookup, ms; past it the request uses a fallback.
    pub store_timeout_ms: u64,
    /// Worker threads of the HTTP server (0 = one per core).
    pub workers: usize,
    /// Model generation whose user vectors are read.
    pub generation: u64,
    /// Threads of the dedicated search pool (0 = one per core).
    pub search_threads: usize,
    /// Searches that may wait for a search thread; beyond, requests get 503.
    pub search_queue: usize,
    /// Where item vectors come from (`[serving.follow]`).
    pub follow: FollowConfig,
}

impl Default for ServingConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            max_k: 100,
            default_k: 10,
            store_timeout_ms: 50,
            workers: 0,
            generation: 1,
            search_threads: 0,
            search_queue: 1024,
            follow: FollowConfig::default(),
        }
    }
}

impl ServingConfig {
    pub fn validate(&self) -> Result<(), ServingError> {
        let bad = |key: &str, why: &str| Err(ServingError::Config(format!("serving.{key}: {why}")));
        if self.bind.parse::<std::net::SocketAddr>().is_err() {
            return bad("bind", "must be an address like 127.0.0.1:8080");
        }
        if !(1..=10_000).contains(&self.max_k) {
            return bad("max_k", "must be in 1..=10000");
        }
        if self.default_k == 0 || self.default_k > self.max_k {
            return bad("default_k", "must be in 1..=max_k");
        }
        if self.store_timeout_ms == 0 {
            return bad("store_timeout_ms", "must be positive");
        }
        if self.search_queue == 0 {
            return bad("search_queue", "must be at least 1");
        }
        self.follow.validate()
    }
}
