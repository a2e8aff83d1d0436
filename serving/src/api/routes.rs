//! Routing: every route, its handler and its metrics label; the JSON error handlers, the
//! JSON 404 and 405.

use actix_web::dev::Service;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};

use super::events::post_events;
use super::items::{popular, similar};
use super::openapi::openapi;
use super::probes::{healthz, metrics, readyz};
use super::recommend::{recommend, recommend_batch};
use crate::{Result, ServingError};

/// Registers every route, the JSON error handlers and the JSON 404.
pub fn configure(cfg: &mut web::ServiceConfig, max_body_bytes: usize) {
    let too_large = |what: String| -> actix_web::Error {
        ServingError::PayloadTooLarge(format!("request body {what}")).into()
    };
    cfg.app_data(
        web::PathConfig::default().error_handler(|err, _| {
            ServingError::BadRequest(format!("invalid path: {err}")).into()
        }),
    )
    .app_data(web::QueryConfig::default().error_handler(|err, _| {
        ServingError::BadRequest(format!("invalid query string: {err}")).into()
    }))
    .app_data(
        web::JsonConfig::default()
            .limit(max_body_bytes)
            .error_handler(move |err, _| match err {
                actix_web::error::JsonPayloadError::OverflowKnownLength { .. }
                | actix_web::error::JsonPayloadError::Overflow { .. } => {
                    too_large(format!("is larger than {max_body_bytes} bytes"))
                }
                other => ServingError::BadRequest(format!("invalid JSON body: {other}")).into(),
            }),
    );
    let route = |path: &'static str, r: actix_web::Route| {
        web::resource(path)
            .route(r)
            .default_service(web::to(method_not_allowed))
            // The metrics label: the pattern, known here without matching the path again.
            .wrap_fn(move |req, srv| {
                req.extensions_mut().insert(RouteLabel(path));
                srv.call(req)
            })
    };
    let [
        recs,
        batch,
        similar_items,
        popular_items,
        events,
        health,
        ready,
        scrape,
        doc,
    ] = ROUTES;
    cfg.service(route(recs, web::get().to(recommend)))
        .service(route(batch, web::post().to(recommend_batch)))
        .service(route(similar_items, web::get().to(similar)))
        .service(route(popular_items, web::get().to(popular)))
        .service(route(events, web::post().to(post_events)))
        .service(route(health, web::get().to(healthz)))
        .service(route(ready, web::get().to(readyz)))
        .service(route(scrape, web::get().to(metrics)))
        .service(route(doc, web::get().to(openapi)))
        .default_service(web::to(not_found));
}

/// Every route's pattern, as registered by [`configure`].
pub const ROUTES: [&str; 9] = [
    "/v1/users/{user_id}/recommendations",
    "/v1/recommendations",
    "/v1/items/{item_id}/similar",
    "/v1/popular",
    "/v1/events",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
];

/// The pattern of the route that served a request, put in its extensions by
/// [`configure`]; absent when no route matched.
#[derive(Debug, Clone, Copy)]
pub struct RouteLabel(pub &'static str);

async fn not_found(req: HttpRequest) -> Result<HttpResponse> {
    Err(ServingError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    HttpResponse::MethodNotAllowed().json(recsys_schemas::api::ErrorBody {
        error: format!("method {} not allowed on {}", req.method(), req.path()),
    })
}
