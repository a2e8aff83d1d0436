//! Probes and scrapes: liveness, readiness, Prometheus metrics. They stay open and
//! unlimited (see the middleware in `server.rs`).

use std::sync::atomic::Ordering;

use actix_web::{HttpResponse, web};

use super::state::AppState;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "Alive")))]
pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: 200 once the index is loaded and caught up with the item-vector topic.
#[utoipa::path(
    get,
    path = "/readyz",
    responses(
        (status = 200, description = "Ready"),
        (status = 503, description = "Catching up; retry after `Retry-After`"),
    )
)]
pub(super) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let catalog = state.catalog.load();
    let status = &state.follow;
    let mut body = serde_json::json!({
        "ready": status.is_ready(),
        "model_generation": catalog.generation,
        "items": catalog.item_count(),
        "catalog_version": catalog.version,
        "applied": status.applied.load(Ordering::Relaxed),
    });
    if status.is_ready() {
        HttpResponse::Ok().json(body)
    } else {
        body["error"] = "catching up with the item-vector topic".into();
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(body)
    }
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Metrics", content_type = "text/plain")))]
pub(super) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let mut gauges = crate::metrics::catalog_gauges(&state.catalog.load(), &state.follow);
    if let Some(extra) = &state.extra_gauges {
        gauges.extend(extra());
    }
    let text = state.metrics.render(&gauges);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text)
}
