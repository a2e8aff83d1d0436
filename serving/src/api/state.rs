//! The state every HTTP worker shares.

use std::sync::Arc;

use crate::ServingConfig;
use crate::catalog::CatalogHolder;
use crate::events::EventSink;
use crate::follow::FollowStatus;
use crate::limits::RateLimiter;
use crate::metrics::{Gauge, Metrics};
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
    /// More gauges for `/metrics` (the all-in-one process adds the trainer's).
    pub extra_gauges: Option<ExtraGauges>,
}

/// `(name, help, value)` gauges computed at scrape time.
pub type ExtraGauges = Arc<dyn Fn() -> Vec<Gauge> + Send + Sync>;

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
            extra_gauges: None,
        })
    }

    /// Adds gauges to `/metrics`.
    pub fn with_gauges(mut self, gauges: ExtraGauges) -> Self {
        self.extra_gauges = Some(gauges);
        self
    }

    /// Accept events on `POST /v1/events` and send them to `sink`.
    pub fn with_events(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.events = Some(sink);
        self
    }
}
