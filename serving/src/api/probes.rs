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
    let checks = state
        .companion
        .as_ref()
        .map(|c| c.checks())
        .unwrap_or_default();
    let failed: Vec<String> = checks
        .iter()
        .filter(|(_, ok, _)| !ok)
        .map(|(name, _, detail)| format!("{name}: {detail}"))
        .collect();
    let mut failed = failed;
    if !status.is_complete() {
        failed.push(format!(
            "catalog: {} item changes could not be applied; the index is behind its topic \
             until the next snapshot",
            status.dropped.load(Ordering::Relaxed)
        ));
    }
    let ready = status.is_ready() && failed.is_empty();
    let mut body = serde_json::json!({
        "ready": ready,
        "model_generation": catalog.generation,
        "items": catalog.item_count(),
        "catalog_version": catalog.version,
        "applied": status.applied.load(Ordering::Relaxed),
    });
    if !checks.is_empty() {
        body["checks"] = checks
            .iter()
            .map(|(name, ok, detail)| serde_json::json!({"name": name, "ok": ok, "detail": detail}))
            .collect();
    }
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        body["error"] = if status.is_ready() {
            failed.join("; ").into()
        } else {
            "catching up with the item-vector topic".into()
        };
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(body)
    }
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Metrics", content_type = "text/plain")))]
pub(super) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let gauges = crate::metrics::catalog_gauges(&state.catalog.load(), &state.follow);
    let mut text = state.metrics.render(&gauges);
    if let Some(companion) = &state.companion {
        companion.metrics(&mut text);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text)
}
