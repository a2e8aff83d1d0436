//! HTTP handlers. Searches run where `serving.search_threads` says: on the HTTP worker
//! itself (the default) or on a dedicated pool (`search.rs`).
//! Every error body is JSON `{"error": ...}` with a 4xx status naming what was wrong, and
//! a dependency failure (user store down or slow) is answered from a fallback, never with
//! a 5xx.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix_web::dev::Service;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use recsys_engine::store::{Recent, UserRecord};
use recsys_schemas::Event;
use recsys_schemas::api::{ErrorBody, RecommendationResponse, ScoredItem, Source};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::warn;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::auth::Role;
use crate::catalog::{Catalog, CatalogHolder};
use crate::events::EventSink;
use crate::follow::FollowStatus;
use crate::limits::RateLimiter;
use crate::metrics::{FallbackCause, Metrics};
use crate::search::SearchPool;
use crate::store::UserVectorStore;
use crate::{Result, ServingConfig, ServingError};

/// Item ids never to return: the user's recent items and the request's `exclude`,
/// borrowed from them. foldhash (randomly seeded per process) rather than SipHash: the
/// set is built and probed on every request, and SipHash was 2.5% of the server's CPU
/// at 5,000 req/s.
type Exclude<'a> = HashSet<&'a str, foldhash::fast::RandomState>;

/// Recent items read per request: what is excluded, and what fold-in averages.
const MAX_RECENT: usize = 500;
/// Recent items averaged into a fold-in vector.
const FOLD_IN_ITEMS: usize = 50;

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
pub type ExtraGauges = Arc<dyn Fn() -> Vec<(&'static str, &'static str, f64)> + Send + Sync>;

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

/// The OpenAPI document of this API, generated from the handlers and types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "recsys",
        description = "Recommendations, similar and popular items, and event ingestion of the recsys streaming recommendation engine."
    ),
    paths(recommend, recommend_batch, similar, popular, post_events, healthz, readyz, metrics),
    components(schemas(
        RecommendationResponse,
        ScoredItem,
        Source,
        ErrorBody,
        Event,
        BatchRequest,
        BatchResponse,
        ItemsResponse,
        Accepted
    )),
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

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

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "Alive")))]
async fn healthz() -> HttpResponse {
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
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
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
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let catalog = state.catalog.load();
    let f = &state.follow;
    let mut gauges = vec![
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
            "1 once caught up with the item-vector topic.",
            if f.is_ready() { 1.0 } else { 0.0 },
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
            "recsys_generation_switches",
            "Generation switches followed since start (models/CURRENT flips).",
            f.generation_switches.load(Ordering::Relaxed) as f64,
        ),
        (
            "recsys_item_vector_delay_ms",
            "Publish-to-searchable delay of the newest applied batch.",
            f.last_delay_ms.load(Ordering::Relaxed) as f64,
        ),
    ];
    if let Some(extra) = &state.extra_gauges {
        gauges.extend(extra());
    }
    let text = state.metrics.render(&gauges);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text)
}

#[derive(Debug, Deserialize)]
struct KQuery {
    /// Kept as text so a bad value gets a message naming `k`.
    k: Option<String>,
    /// Comma-separated item ids never to return.
    exclude: Option<String>,
    category: Option<String>,
}

fn parse_k(raw: Option<&str>, cfg: &ServingConfig) -> Result<usize> {
    let Some(raw) = raw else {
        return Ok(cfg.default_k);
    };
    let max = cfg.max_k;
    match raw.trim().parse::<usize>() {
        Ok(k) if (1..=max).contains(&k) => Ok(k),
        Ok(k) => Err(ServingError::BadRequest(format!(
            "k must be between 1 and {max}, got {k}"
        ))),
        Err(_) => Err(ServingError::BadRequest(format!(
            "k must be an integer between 1 and {max}, got {raw:?}"
        ))),
    }
}

fn check_id(id: &str, what: &str) -> Result<()> {
    if id.is_empty() || id.len() > recsys_schemas::event::MAX_ID_BYTES {
        return Err(ServingError::BadRequest(format!(
            "{what} must be 1..={} bytes",
            recsys_schemas::event::MAX_ID_BYTES
        )));
    }
    Ok(())
}

/// Searches `index` for `query` and keeps up to `k` items passing `keep`. The items in
/// `exclude` (catalog ids) are left out by the search itself, so they cost no re-rank
/// depth; items `keep` refuses (another category) make it ask for more (×4 each round)
/// while fewer than `k` are left.
async fn search_filtered<'a>(
    state: &AppState,
    catalog: &Catalog,
    index: Arc<recsys_engine::index::ItemIndex>,
    query: &[f32],
    k: usize,
    exclude: impl IntoIterator<Item = &'a str>,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<ScoredItem>> {
    let started = Instant::now();
    let rows: Vec<u64> = exclude
        .into_iter()
        .filter_map(|item| catalog.ids.get(item).map(u64::from))
        .collect();
    let mut fetch = k;
    let items = loop {
        fetch = fetch.min(index.len());
        let hits = state.search.search(&index, query, fetch, &rows).await?;
        let items: Vec<ScoredItem> = hits
            .iter()
            .filter_map(|&(row, score)| {
                let item = catalog.ids.id(row as u32)?;
                keep(item).then(|| ScoredItem {
                    item_id: item.to_owned(),
                    score,
                })
            })
            .take(k)
            .collect();
        if items.len() >= k || fetch >= index.len() || hits.len() < fetch {
            break items;
        }
        fetch *= 4;
    };
    state.metrics.search.observe(started.elapsed());
    Ok(items)
}

/// Recommendations for one user.
///
/// The user's vector and recent items come from the user store; without a vector the
/// answer is folded in from the recent items, without those it is the popular list.
/// Recent and hidden items are never returned. A failing or slow store is answered from
/// the fallbacks with `fallback: true`, never with a 5xx.
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/recommendations",
    params(
        ("user_id" = String, Path, description = "1..=256 bytes"),
        ("k" = Option<u32>, Query, description = "How many items, 1..=max_k (default 10)"),
        ("category" = Option<String>, Query, description = "Only items carrying this category (from the `items` topic)"),
        ("exclude" = Option<String>, Query, description = "Comma-separated item ids never to return"),
    ),
    responses(
        (status = 200, description = "Items, best first", body = RecommendationResponse),
        (status = 400, description = "A parameter is invalid; the reason names it", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 503, description = "Too many requests in flight; retry after `Retry-After`", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn recommend(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<KQuery>,
) -> Result<web::Json<RecommendationResponse>> {
    state.cfg.auth.require(&req, Role::Read)?;
    let user_id = path.into_inner();
    check_id(&user_id, "user_id")?;
    let k = parse_k(query.k.as_deref(), &state.cfg)?;
    let exclude: Vec<String> = query
        .exclude
        .as_deref()
        .map(|l| {
            l.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let category = query.into_inner().category;
    Ok(web::Json(
        recommend_one(&state, user_id, k, exclude, category.as_deref()).await?,
    ))
}

/// One user's answer: vector and history from the store (within the timeout), then the
/// search or a fallback.
async fn recommend_one(
    state: &AppState,
    user_id: String,
    k: usize,
    extra_exclude: Vec<String>,
    category: Option<&str>,
) -> Result<RecommendationResponse> {
    let catalog = state.catalog.load();
    let started = Instant::now();
    let lookup = tokio::time::timeout(
        Duration::from_millis(state.cfg.store_timeout_ms),
        state.users.get(catalog.generation, &user_id, MAX_RECENT),
    )
    .await;
    state.metrics.store_lookup.observe(started.elapsed());
    let (record, fallback) = match lookup {
        Ok(Ok(record)) => (record, false),
        Ok(Err(e)) => {
            warn!(error = %e, "user store failed; serving a fallback");
            state.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
            state.metrics.fallback(FallbackCause::StoreError);
            (UserRecord::default(), true)
        }
        Err(_) => {
            warn!("user store timed out; serving a fallback");
            state.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
            state.metrics.fallback(FallbackCause::StoreTimeout);
            (UserRecord::default(), true)
        }
    };
    let mut exclude = Exclude::with_capacity_and_hasher(
        record.recent.len() + extra_exclude.len(),
        Default::default(),
    );
    exclude.extend(record.recent.iter());
    exclude.extend(extra_exclude.iter().map(String::as_str));
    let (source, items) = rank(
        state,
        &catalog,
        record.vector,
        &record.recent,
        &exclude,
        k,
        category,
    )
    .await?;
    state.metrics.source(source);
    Ok(RecommendationResponse {
        user_id,
        model_generation: catalog.generation,
        source,
        fallback,
        items,
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    user_ids: Vec<String>,
    k: Option<usize>,
    #[serde(default)]
    exclude: Vec<String>,
    /// Only items carrying this category.
    category: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    results: Vec<RecommendationResponse>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// Events produced.
    accepted: usize,
}

/// Recommendations for several users at once (at most `max_batch_users`).
#[utoipa::path(
    post,
    path = "/v1/recommendations",
    request_body = BatchRequest,
    responses(
        (status = 200, description = "One answer per user, in request order", body = BatchResponse),
        (status = 400, description = "A parameter is invalid; the reason names it", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 503, description = "Too many requests in flight; retry after `Retry-After`", body = ErrorBody),
        (status = 413, description = "Body over max_body_bytes", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn recommend_batch(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<BatchRequest>,
) -> Result<web::Json<BatchResponse>> {
    state.cfg.auth.require(&req, Role::Read)?;
    let body = body.into_inner();
    if body.user_ids.is_empty() || body.user_ids.len() > state.cfg.max_batch_users {
        return Err(ServingError::BadRequest(format!(
            "user_ids must hold 1..={} ids, got {}",
            state.cfg.max_batch_users,
            body.user_ids.len()
        )));
    }
    for (i, u) in body.user_ids.iter().enumerate() {
        check_id(u, &format!("user_ids[{i}]"))?;
    }
    let k = parse_k(body.k.map(|k| k.to_string()).as_deref(), &state.cfg)?;
    let answers = body
        .user_ids
        .into_iter()
        .map(|u| recommend_one(&state, u, k, body.exclude.clone(), body.category.as_deref()));
    let results = futures::future::try_join_all(answers).await?;
    Ok(web::Json(BatchResponse { results }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ItemsResponse {
    model_generation: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    item_id: Option<String>,
    items: Vec<ScoredItem>,
}

/// Items whose vectors are nearest to an item's (the item itself excluded).
#[utoipa::path(
    get,
    path = "/v1/items/{item_id}/similar",
    params(
        ("item_id" = String, Path, description = "1..=256 bytes"),
        ("k" = Option<u32>, Query, description = "How many items, 1..=max_k (default 10)"),
        ("category" = Option<String>, Query, description = "Only items carrying this category (from the `items` topic)"),
    ),
    responses(
        (status = 200, description = "Items, best first", body = ItemsResponse),
        (status = 400, description = "A parameter is invalid; the reason names it", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 503, description = "Too many requests in flight; retry after `Retry-After`", body = ErrorBody),
        (status = 404, description = "The item is not in the index", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn similar(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<KQuery>,
) -> Result<web::Json<ItemsResponse>> {
    state.cfg.auth.require(&req, Role::Read)?;
    let item_id = path.into_inner();
    check_id(&item_id, "item_id")?;
    let k = parse_k(query.k.as_deref(), &state.cfg)?;
    let catalog = state.catalog.load();
    let found = catalog.index.as_ref().and_then(|index| {
        let row = catalog.ids.get(&item_id)?;
        Some((index.clone(), index.vector(u64::from(row))?.to_vec()))
    });
    let Some((index, vector)) = found else {
        return Err(ServingError::NotFound(format!(
            "item {item_id:?} is not in the index"
        )));
    };
    let category = query.category.as_deref();
    let items = search_filtered(
        &state,
        &catalog,
        index,
        &vector,
        k,
        [item_id.as_str()],
        |item| item != item_id && category.is_none_or(|c| catalog.in_category(item, c)),
    )
    .await?;
    Ok(web::Json(ItemsResponse {
        model_generation: catalog.generation,
        item_id: Some(item_id),
        items,
    }))
}

/// The most popular items (decayed interaction counts from the trainer).
#[utoipa::path(
    get,
    path = "/v1/popular",
    params(
        ("k" = Option<u32>, Query, description = "How many items, 1..=max_k (default 10)"),
        ("category" = Option<String>, Query, description = "Only items carrying this category (from the `items` topic)"),
    ),
    responses(
        (status = 200, description = "Items, most popular first", body = ItemsResponse),
        (status = 400, description = "A parameter is invalid; the reason names it", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 503, description = "Too many requests in flight; retry after `Retry-After`", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn popular(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<KQuery>,
) -> Result<web::Json<ItemsResponse>> {
    state.cfg.auth.require(&req, Role::Read)?;
    let k = parse_k(query.k.as_deref(), &state.cfg)?;
    let catalog = state.catalog.load();
    Ok(web::Json(ItemsResponse {
        model_generation: catalog.generation,
        item_id: None,
        items: popular_items(&catalog, &Exclude::default(), query.category.as_deref(), k),
    }))
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
async fn post_events(
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
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
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
        let event = Event::from_map(map, now_ms)
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

fn popular_items(
    catalog: &Catalog,
    exclude: &Exclude<'_>,
    category: Option<&str>,
    k: usize,
) -> Vec<ScoredItem> {
    catalog
        .popular
        .iter()
        .filter(|(item, _)| !exclude.contains(item.as_str()))
        .filter(|(item, _)| category.is_none_or(|c| catalog.in_category(item, c)))
        .take(k)
        .map(|(item, score)| ScoredItem {
            item_id: item.clone(),
            score: *score,
        })
        .collect()
}

/// Personal vector if there is one, else a fold-in of recent items, else popular items.
async fn rank(
    state: &AppState,
    catalog: &Catalog,
    vector: Option<Vec<f32>>,
    recent: &Recent,
    exclude: &Exclude<'_>,
    k: usize,
    category: Option<&str>,
) -> Result<(Source, Vec<ScoredItem>)> {
    let index = catalog.index.clone();
    let (source, query) = match (&index, vector) {
        (Some(index), Some(v)) if v.len() == index.dim() => (Source::Personal, Some(v)),
        (Some(index), _) => (Source::FoldIn, fold_in(catalog, index, recent)),
        (None, _) => (Source::Popular, None),
    };
    if let (Some(index), Some(query)) = (index, query) {
        let excluded = exclude.iter().copied();
        let items = search_filtered(state, catalog, index, &query, k, excluded, |item| {
            !exclude.contains(item) && category.is_none_or(|c| catalog.in_category(item, c))
        })
        .await?;
        return Ok((source, items));
    }
    Ok((
        Source::Popular,
        popular_items(catalog, exclude, category, k),
    ))
}

/// Mean of the vectors of the user's most recent known items.
fn fold_in(
    catalog: &Catalog,
    index: &recsys_engine::index::ItemIndex,
    recent: &Recent,
) -> Option<Vec<f32>> {
    let mut sum = vec![0.0f32; index.dim()];
    let mut n = 0usize;
    for item in recent.iter().take(FOLD_IN_ITEMS) {
        let Some(v) = catalog
            .ids
            .get(item)
            .and_then(|id| index.vector(u64::from(id)))
        else {
            continue;
        };
        sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
        n += 1;
    }
    (n > 0).then(|| sum.into_iter().map(|s| s / n as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_rules() {
        let cfg = ServingConfig::default();
        assert_eq!(parse_k(None, &cfg).unwrap(), 10);
        assert_eq!(parse_k(Some("7"), &cfg).unwrap(), 7);
        for bad in ["0", "101", "abc", "-1", "1.5", ""] {
            let err = parse_k(Some(bad), &cfg).unwrap_err().to_string();
            assert!(err.contains('k'), "{bad}: {err}");
        }
    }
}
