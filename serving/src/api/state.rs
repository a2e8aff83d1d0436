//! The state every HTTP worker shares.

use std::sync::Arc;

use recsys_schemas::EventLimits;

use crate::ServingConfig;
use crate::catalog::CatalogHolder;
use crate::events::EventSink;
use crate::follow::FollowStatus;
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use crate::search::SearchPool;
use crate::store::UserVectorStore;

/// Shared state of the HTTP workers.
pub struct AppState {
    pub catalog: Arc<CatalogHolder>,
    pub users: Arc<dyn UserVectorStore>,
    pub cfg: ServingConfig,
    /// Whether the catalog has caught up with the item-vector topic (`/readyz`).
    pub follow: Arc<FollowStatus>,
    pub search: SearchPool,
    /// Where `POST /v1/events` sends events; `None` answers 503.
    pub events: Option<Arc<dyn EventSink>>,
    pub metrics: Metrics,
    pub event_limiter: RateLimiter,
    /// The bounds on an accepted event's weight and time (`[events]`).
    pub event_limits: EventLimits,
    /// Another part of the process whose metrics and readiness the server reports too
    /// (the all-in-one process: the trainer).
    pub companion: Option<Arc<dyn Companion>>,
}

/// What another part of the process adds to `/metrics` and `/readyz`.
pub trait Companion: Send + Sync {
    /// Appends metrics in the text exposition format.
    fn metrics(&self, out: &mut String);
    /// Readiness checks as `(name, ok, detail)`; `/readyz` is 200 only if all pass.
    fn checks(&self) -> Vec<(String, bool, String)>;
}

impl AppState {
    /// Sets up searching as `cfg.search_threads` says (inline, or a pool of threads).
    pub fn new(
        catalog: Arc<CatalogHolder>,
        users: Arc<dyn UserVectorStore>,
        cfg: ServingConfig,
        follow: Arc<FollowStatus>,
    ) -> std::io::Result<Self> {
        let search = SearchPool::new(cfg.search_threads, cfg.search_queue)?;
        let event_limiter = RateLimiter::new(cfg.events_per_s_per_key, cfg.events_burst);
        Ok(Self {
            catalog,
            users,
            cfg,
            follow,
            search,
            events: None,
            metrics: Metrics::default(),
            event_limiter,
            event_limits: EventLimits::default(),
            companion: None,
        })
    }

    /// Reports `companion`'s metrics and readiness checks beside the server's own.
    pub fn with_companion(mut self, companion: Arc<dyn Companion>) -> Self {
        self.companion = Some(companion);
        self
    }

    /// Bounds `POST /v1/events` by `limits` (`[events]`).
    pub fn with_event_limits(mut self, limits: EventLimits) -> Self {
        self.event_limits = limits;
        self
    }

    /// Accept events on `POST /v1/events` and send them to `sink`.
    pub fn with_events(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.events = Some(sink);
        self
    }
}
