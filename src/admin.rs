//! The trainer seen from outside: `recsys train` serves `/healthz`, `/readyz` and
//! `/metrics` on `trainer.admin_bind`; `recsys run` reports the same checks and metrics
//! on its API server (through [`TrainerProbe`] as the server's companion).

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
use recsys_serving::Companion;
use recsys_trainer::TrainerStats;
use recsys_trainer::online::health::now_ms;

/// The trainer's checks and metrics, for a server to report.
pub struct TrainerProbe(pub Arc<TrainerStats>);

impl Companion for TrainerProbe {
    fn metrics(&self, out: &mut String) {
        recsys_trainer::metrics::render(&self.0, out);
    }

    fn checks(&self) -> Vec<(String, bool, String)> {
        self.0
            .health
            .checks(now_ms())
            .into_iter()
            .map(|c| (format!("trainer.{}", c.name), c.ok, c.detail))
            .collect()
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(stats: web::Data<TrainerStats>) -> HttpResponse {
    let checks = stats.health.checks(now_ms());
    let ready = checks.iter().all(|c| c.ok);
    let body = serde_json::json!({
        "ready": ready,
        "checks": checks,
        "consumer_lag": stats.health.lag(),
        "generation": stats.generation.load(std::sync::atomic::Ordering::Relaxed),
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(body)
    }
}

async fn metrics(stats: web::Data<TrainerStats>) -> HttpResponse {
    let mut out = String::new();
    recsys_trainer::metrics::render(&stats, &mut out);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out)
}

/// Binds the admin endpoints on `bind` (one worker: they are scraped, not loaded) and
/// returns the running server with its address.
pub fn start(bind: &str, stats: Arc<TrainerStats>) -> std::io::Result<(Server, SocketAddr)> {
    let data = web::Data::from(stats);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics))
    })
    .disable_signals()
    .workers(1)
    .shutdown_timeout(1)
    .bind(bind)?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("admin server bound no address"))?;
    Ok((server.run(), addr))
}
