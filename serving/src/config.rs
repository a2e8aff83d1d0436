//! Serving settings: the `[serving]` section of the config file, and `[store]`, where
//! user vectors live.

use serde::{Deserialize, Serialize};

use crate::ServingError;
use crate::auth::AuthConfig;
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
    /// Threads of a dedicated search pool; 0 (the default) searches on the HTTP worker
    /// that took the request, with no hand-off (see `search.rs` for when a pool pays).
    pub search_threads: usize,
    /// Searches that may wait for a pool thread; beyond, requests get 503 (pool only).
    pub search_queue: usize,
    /// Largest request body, bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// Requests handled at once (probes and metrics excluded); beyond, 503 with
    /// `Retry-After`.
    pub max_in_flight: usize,
    /// `POST /v1/events`: sustained events per second per API key (per client address
    /// without auth), and the burst allowed above it.
    pub events_per_s_per_key: f64,
    pub events_burst: f64,
    /// Events in one `POST /v1/events` request.
    pub max_events_per_request: usize,
    /// Users in one `POST /v1/recommendations` request.
    pub max_batch_users: usize,
    /// Topic `POST /v1/events` produces to.
    pub events_topic: String,
    /// API keys (`[serving.auth]`).
    pub auth: AuthConfig,
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
            max_body_bytes: 1 << 20,
            max_in_flight: 4096,
            events_per_s_per_key: 5_000.0,
            events_burst: 10_000.0,
            max_events_per_request: 1_000,
            max_batch_users: 100,
            events_topic: recsys_schemas::contract::EVENTS_TOPIC.into(),
            auth: AuthConfig::default(),
            follow: FollowConfig::default(),
        }
    }
}

/// The `[store]` section: where user vectors and recent items live.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Redis URL for user vectors and histories, e.g. `redis://127.0.0.1:6379`, or
    /// `rediss://host:6380` over TLS. Empty: an in-memory store inside the process
    /// (all-in-one mode only).
    pub redis_url: String,
    /// `rediss://`: a PEM CA bundle to trust instead of the system's roots (empty: the
    /// system's).
    pub tls_ca_file: String,
    /// `rediss://`: a client certificate (PEM chain) and its key, for a server that asks
    /// for one (`tls-auth-clients`); both or neither.
    pub tls_cert_file: String,
    pub tls_key_file: String,
}

impl StoreConfig {
    /// The TLS material of a `rediss://` URL, read from the configured files.
    pub fn tls(&self) -> Result<recsys_schemas::config::TlsPem, ServingError> {
        recsys_schemas::config::TlsPem::load(
            "store",
            &self.tls_ca_file,
            &self.tls_cert_file,
            &self.tls_key_file,
        )
        .map_err(|e| ServingError::Config(e.to_string()))
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
        if self.max_body_bytes < 1024 {
            return bad("max_body_bytes", "must be at least 1024");
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight", "must be at least 1");
        }
        if self.events_per_s_per_key.is_nan() || self.events_per_s_per_key <= 0.0 {
            return bad("events_per_s_per_key", "must be positive");
        }
        if self.events_burst.is_nan() || self.events_burst < 1.0 {
            return bad("events_burst", "must be at least 1");
        }
        if self.max_events_per_request == 0
            || self.max_events_per_request as f64 > self.events_burst
        {
            return bad(
                "max_events_per_request",
                "must be in 1..=events_burst (a larger request could never pass the limit)",
            );
        }
        if self.max_batch_users == 0 {
            return bad("max_batch_users", "must be at least 1");
        }
        if self.events_topic.is_empty() {
            return bad("events_topic", "must not be empty");
        }
        self.auth.validate()?;
        self.follow.validate()
    }
}
