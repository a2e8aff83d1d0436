//! `POST /v1/events`: validated events produced to the `events` topic, rate-limited per
//! key.

use std::sync::atomic::Ordering;

use actix_web::{HttpRequest, HttpResponse, web};
use recsys_schemas::Event;
use recsys_schemas::api::ErrorBody;
use serde::Serialize;
use serde_json::Value;
use tracing::warn;
use utoipa::ToSchema;

use super::state::AppState;
use crate::auth::Role;
use crate::{Result, ServingError};

#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// Events produced.
    accepted: usize,
}

/// Accepts one event or an array of events and produces them to the `events` topic.
///
/// All or nothing: the first invalid event answers 400 naming its position and field.
#[utoipa::path(
    post,
    path = "/v1/events",
    request_body(content = Vec<Event>, description = "An array of events, or one event object"),
    responses(
        (status = 202, description = "Produced to the event log", body = Accepted),
        (status = 400, description = "A parameter is invalid; the reason names it", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 503, description = "Too many requests in flight; retry after `Retry-After`", body = ErrorBody),
        (status = 403, description = "The key may not write", body = ErrorBody),
        (status = 413, description = "Body over max_body_bytes", body = ErrorBody),
        (status = 429, description = "Over the per-key event rate; retry after `Retry-After`", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(super) async fn post_events(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    state.cfg.auth.require(&req, Role::Write)?;
    let body = read_body(payload, state.cfg.max_body_bytes).await?;
    let Some(sink) = state.events.clone() else {
        return Err(ServingError::Unavailable(
            "event ingestion is not configured on this server".into(),
        ));
    };
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ServingError::BadRequest(format!("body is not valid JSON: {e}")))?;
    let (objects, single) = match value {
        Value::Array(list) => (list, false),
        other => (vec![other], true),
    };
    if objects.is_empty() || objects.len() > state.cfg.max_events_per_request {
        return Err(ServingError::BadRequest(format!(
            "a request carries 1..={} events, got {}",
            state.cfg.max_events_per_request,
            objects.len()
        )));
    }
    let now_ms = recsys_schemas::event::now_ms();
    let mut messages = Vec::with_capacity(objects.len());
    for (i, obj) in objects.iter().enumerate() {
        let at = if single {
            String::new()
        } else {
            format!("events[{i}]: ")
        };
        let Value::Object(map) = obj else {
            return Err(ServingError::BadRequest(format!(
                "{at}an event must be a JSON object"
            )));
        };
        let event = state
            .event_limits
            .parse_map(map, now_ms)
            .map_err(|e| ServingError::BadRequest(format!("{at}{e}")))?;
        messages.push((event.user_id.clone(), event.to_json()));
    }
    // `require` above has checked the key; bucket by it (hashed), or by address.
    let key = if state.cfg.auth.enabled() {
        key_label(&req)
    } else {
        req.peer_addr()
            .map_or_else(|| "anonymous".into(), |a| a.ip().to_string())
    };
    if let Err(wait) = state.event_limiter.take(&key, messages.len() as f64) {
        state.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
        return Err(ServingError::TooManyRequests(
            format!(
                "over {} events/s for this key; retry in {wait:.1} s",
                state.cfg.events_per_s_per_key
            ),
            wait.ceil() as u64,
        ));
    }
    let n = messages.len();
    sink.send(messages).await.map_err(|e| {
        warn!(error = %e, "could not produce accepted events");
        ServingError::Unavailable("the event log is unavailable; retry shortly".into())
    })?;
    state
        .metrics
        .events_accepted
        .fetch_add(n as u64, Ordering::Relaxed);
    Ok(HttpResponse::Accepted().json(Accepted { accepted: n }))
}

/// Reads the whole body, refusing it with 413 as soon as it passes `limit` bytes.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::BytesMut> {
    use futures::StreamExt;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ServingError::BadRequest(format!("invalid request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ServingError::PayloadTooLarge(format!(
                "request body is larger than {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A stable label for the request's key, without keeping the key itself: a hash.
fn key_label(req: &HttpRequest) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for name in ["authorization", "x-api-key"] {
        req.headers().get(name).map(|v| v.as_bytes()).hash(&mut h);
    }
    format!("{:016x}", h.finish())
}
