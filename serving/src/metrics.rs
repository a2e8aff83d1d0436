//! Prometheus metrics in the text exposition format, kept in plain atomics and a small
//! map: requests and latency histograms by route and status, the latency of the two
//! stages of a recommendation (user-store lookup, index search), fallbacks by cause, user
//! store errors, rejected requests; index size and generation are read from the catalog
//! when scraped.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use recsys_schemas::api::Source;
use recsys_schemas::histogram::{Bounds, Histogram, RequestBounds};

use crate::catalog::Catalog;
use crate::follow::FollowStatus;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: &[f64] = RequestBounds::BOUNDS;

/// The latency of one stage of the request path, unlabelled and lock-free.
pub type StageHistogram = Histogram<RequestBounds>;

#[derive(Default, Clone)]
struct RouteHistogram {
    counts: [u64; RequestBounds::BOUNDS.len()],
    count: u64,
    sum: f64,
}

/// Why an answer came from a fallback path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FallbackCause {
    /// The user store failed.
    StoreError,
    /// The user store did not answer within `store_timeout_ms`.
    StoreTimeout,
}

impl FallbackCause {
    fn label(self) -> &'static str {
        match self {
            Self::StoreError => "store_error",
            Self::StoreTimeout => "store_timeout",
        }
    }
}

/// Recommendation sources and their labels, in the order of `Metrics::sources`.
const SOURCES: [(Source, &str); 3] = [
    (Source::Personal, "personal"),
    (Source::FoldIn, "fold_in"),
    (Source::Popular, "popular"),
];

/// `source`'s slot in [`SOURCES`]: a match, so a new source does not compile until it
/// has one.
fn source_slot(source: Source) -> usize {
    match source {
        Source::Personal => 0,
        Source::FoldIn => 1,
        Source::Popular => 2,
    }
}

/// The method as a label with no allocation; methods the API does not serve share
/// `OTHER`, so a client cannot grow the series without bound.
pub fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

/// Counters and histograms of the API. Labels are static strings: recording a request
/// allocates nothing.
#[derive(Default)]
pub struct Metrics {
    /// (route pattern, method, status) → latency histogram
    requests: Mutex<BTreeMap<(&'static str, &'static str, u16), RouteHistogram>>,
    fallbacks: Mutex<BTreeMap<FallbackCause, u64>>,
    /// Answers by source, indexed as `SOURCES`.
    sources: [AtomicU64; SOURCES.len()],
    /// User-store lookups (vector and recent items, one round trip), failed and
    /// timed-out ones included.
    pub store_lookup: StageHistogram,
    /// Index searches of the request path: FAISS, exact re-ranking, and any wider rounds
    /// a filter asks for.
    pub search: StageHistogram,
    pub store_errors: AtomicU64,
    pub in_flight_rejected: AtomicU64,
    pub rate_limited: AtomicU64,
    pub events_accepted: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn observe(&self, route: &'static str, method: &'static str, status: u16, seconds: f64) {
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let h = map.entry((route, method, status)).or_default();
        for (i, &b) in BUCKETS.iter().enumerate() {
            if seconds <= b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    pub fn fallback(&self, cause: FallbackCause) {
        *self
            .fallbacks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(cause)
            .or_default() += 1;
    }

    pub fn source(&self, source: Source) {
        self.sources[source_slot(source)].fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text, with `gauges` (name, help, value) appended.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP recsys_http_requests_total HTTP requests by route, method and status.\n\
             # TYPE recsys_http_requests_total counter"
        );
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for ((route, method, status), h) in &requests {
            let _ = writeln!(
                out,
                "recsys_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {}",
                h.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP recsys_http_request_duration_seconds HTTP request latency.\n\
             # TYPE recsys_http_request_duration_seconds histogram"
        );
        for ((route, method, status), h) in &requests {
            let labels = format!("route=\"{route}\",method=\"{method}\",status=\"{status}\"");
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "recsys_http_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "recsys_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}\n\
                 recsys_http_request_duration_seconds_sum{{{labels}}} {}\n\
                 recsys_http_request_duration_seconds_count{{{labels}}} {}",
                h.count, h.sum, h.count
            );
        }
        self.store_lookup.render(
            &mut out,
            "recsys_store_lookup_duration_seconds",
            "User-store lookups (vector and recent items, one round trip), failed and timed-out ones included.",
        );
        self.search.render(
            &mut out,
            "recsys_search_duration_seconds",
            "Index searches of the request path (FAISS, exact re-ranking, wider rounds for filters).",
        );
        let _ = writeln!(
            out,
            "# HELP recsys_fallbacks_total Answers served from a fallback because a dependency failed, by cause.\n\
             # TYPE recsys_fallbacks_total counter"
        );
        for (cause, n) in self
            .fallbacks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "recsys_fallbacks_total{{cause=\"{}\"}} {n}",
                cause.label()
            );
        }
        let _ = writeln!(
            out,
            "# HELP recsys_answers_total Recommendation answers by the path that produced them.\n\
             # TYPE recsys_answers_total counter"
        );
        for (&(_, label), n) in SOURCES.iter().zip(&self.sources) {
            let _ = writeln!(
                out,
                "recsys_answers_total{{source=\"{}\"}} {}",
                label,
                n.load(Ordering::Relaxed)
            );
        }
        for (name, help, value) in [
            (
                "recsys_store_errors_total",
                "User store lookups that failed or timed out.",
                &self.store_errors,
            ),
            (
                "recsys_in_flight_rejected_total",
                "Requests refused with 503 because too many were in flight.",
                &self.in_flight_rejected,
            ),
            (
                "recsys_rate_limited_total",
                "Requests refused with 429 by the per-key rate limit.",
                &self.rate_limited,
            ),
            (
                "recsys_events_accepted_total",
                "Events accepted by POST /v1/events.",
                &self.events_accepted,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

/// `(name, help, value)` of a gauge computed when `/metrics` is scraped.
pub type Gauge = (&'static str, &'static str, f64);

/// The catalog's and the item follower's gauges, read when `/metrics` is scraped.
pub fn catalog_gauges(catalog: &Catalog, f: &FollowStatus) -> Vec<Gauge> {
    vec![
        (
            "recsys_index_items",
            "Items searchable in the index.",
            catalog.item_count() as f64,
        ),
        (
            "recsys_model_generation",
            "Model generation being served.",
            catalog.generation as f64,
        ),
        (
            "recsys_catalog_version",
            "Swaps of the catalog since start.",
            catalog.version as f64,
        ),
        (
            "recsys_ready",
            "1 once caught up with the item-vector topic, with no change dropped.",
            if f.is_ready() && f.is_complete() {
                1.0
            } else {
                0.0
            },
        ),
        (
            "recsys_item_vectors_applied",
            "Item-vector changes applied since start.",
            f.applied.load(Ordering::Relaxed) as f64,
        ),
        (
            "recsys_item_vectors_rejected",
            "Item-vector messages rejected since start.",
            f.rejected.load(Ordering::Relaxed) as f64,
        ),
        (
            "recsys_item_vectors_dropped",
            "Valid item-vector changes whose batch could not be applied, since the last snapshot.",
            f.dropped.load(Ordering::Relaxed) as f64,
        ),
        (
            "recsys_generation_switches",
            "Generation switches followed since start (models/CURRENT flips).",
            f.generation_switches.load(Ordering::Relaxed) as f64,
        ),
        (
            "recsys_item_vector_delay_ms",
            "Publish-to-searchable delay of the newest applied batch.",
            f.last_delay_ms.load(Ordering::Relaxed) as f64,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn renders_counts_buckets_and_gauges() {
        let m = Metrics::default();
        m.observe("/v1/popular", "GET", 200, 0.0003);
        m.observe("/v1/popular", "GET", 200, 0.02);
        m.observe("/v1/popular", "GET", 400, 0.0001);
        m.fallback(FallbackCause::StoreTimeout);
        m.source(Source::Popular);
        m.source(Source::Personal);
        m.source(Source::Personal);
        let text = m.render(&[("recsys_index_items", "Items.", 42.0)]);
        assert!(text.contains(
            "recsys_http_requests_total{route=\"/v1/popular\",method=\"GET\",status=\"200\"} 2"
        ));
        assert!(text.contains("status=\"200\",le=\"0.0005\"} 1"), "{text}");
        assert!(text.contains("status=\"200\",le=\"0.025\"} 2"), "{text}");
        assert!(text.contains("recsys_fallbacks_total{cause=\"store_timeout\"} 1"));
        assert!(text.contains("recsys_answers_total{source=\"popular\"} 1"));
        assert!(text.contains("recsys_answers_total{source=\"personal\"} 2"));
        assert!(text.contains("recsys_answers_total{source=\"fold_in\"} 0"));
        for (i, &(source, _)) in SOURCES.iter().enumerate() {
            assert_eq!(source_slot(source), i);
        }
        assert!(text.contains("recsys_index_items 42"));
        // Stage histograms: cumulative buckets (a value on a bound counts in it), the
        // slow one only in +Inf, sum in seconds.
        for ms in [0.3, 2.5, 3000.0] {
            m.store_lookup
                .observe(Duration::from_micros((ms * 1e3) as u64));
        }
        let text = m.render(&[]);
        for line in [
            "recsys_store_lookup_duration_seconds_bucket{le=\"0.00025\"} 0",
            "recsys_store_lookup_duration_seconds_bucket{le=\"0.0005\"} 1",
            "recsys_store_lookup_duration_seconds_bucket{le=\"0.0025\"} 2",
            "recsys_store_lookup_duration_seconds_bucket{le=\"2.5\"} 2",
            "recsys_store_lookup_duration_seconds_bucket{le=\"+Inf\"} 3",
            "recsys_store_lookup_duration_seconds_sum 3.0028",
            "recsys_store_lookup_duration_seconds_count 3",
            "recsys_search_duration_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
