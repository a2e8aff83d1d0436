//! HTTP handlers. Searches run on the dedicated search pool, never on the async workers.
//! Every error body is JSON `{"error": ...}` with a 4xx status naming what was wrong.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use recsys_engine::store::UserRecord;
use recsys_schemas::api::{RecommendationResponse, ScoredItem, Source};
use serde::Deserialize;
use tracing::warn;

use crate::catalog::{Catalog, CatalogHolder};
use crate::follow::FollowStatus;
use crate::search::SearchPool;
use crate::store::UserVectorStore;
use crate::{Result, ServingConfig, ServingError};

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
}

impl AppState {
    /// Starts the search pool sized by `cfg`.
    pub fn new(
        catalog: Arc<CatalogHolder>,
        users: Arc<dyn UserVectorStore>,
        cfg: ServingConfig,
        follow: Arc<FollowStatus>,
    ) -> std::io::Result<Self> {
        let search = SearchPool::new(cfg.search_threads, cfg.search_queue)?;
        Ok(Self {
            catalog,
            users,
            cfg,
            follow,
            search,
        })
    }
}

/// Registers every route, the JSON error handlers and the JSON 404.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::PathConfig::default().error_handler(|err, _| {
            ServingError::BadRequest(format!("invalid path: {err}")).into()
        }),
    )
    .app_data(web::QueryConfig::default().error_handler(|err, _| {
        ServingError::BadRequest(format!("invalid query string: {err}")).into()
    }))
    .service(
        web::resource("/v1/users/{user_id}/recommendations")
            .route(web::get().to(recommend))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/healthz")
            .route(web::get().to(healthz))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/readyz")
            .route(web::get().to(readyz))
            .default_service(web::to(method_not_allowed)),
    )
    .default_service(web::to(not_found));
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

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// 200 once the index is loaded and caught up with the item-vector topic, 503 (with
/// `Retry-After`) before.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let catalog = state.catalog.load();
    let status = &state.follow;
    let body = serde_json::json!({
        "ready": status.is_ready(),
        "model_generation": catalog.generation,
        "items": catalog.item_count(),
        "catalog_version": catalog.version,
        "applied": status.applied.load(std::sync::atomic::Ordering::Relaxed),
    });
    if status.is_ready() {
        HttpResponse::Ok().json(body)
    } else {
        let mut body = body;
        body["error"] = "catching up with the item-vector topic".into();
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(body)
    }
}

#[derive(Debug, Deserialize)]
struct RecommendQuery {
    /// Kept as text so a bad value gets a message naming `k`.
    k: Option<String>,
    /// Comma-separated item ids never to return.
    exclude: Option<String>,
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

async fn recommend(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<RecommendQuery>,
) -> Result<web::Json<RecommendationResponse>> {
    let user_id = path.into_inner();
    if user_id.is_empty() || user_id.len() > recsys_schemas::event::MAX_ID_BYTES {
        return Err(ServingError::BadRequest(format!(
            "user_id must be 1..={} bytes",
            recsys_schemas::event::MAX_ID_BYTES
        )));
    }
    let k = parse_k(query.k.as_deref(), &state.cfg)?;
    let catalog = state.catalog.load();

    let lookup = tokio::time::timeout(
        Duration::from_millis(state.cfg.store_timeout_ms),
        state.users.get(catalog.generation, &user_id, MAX_RECENT),
    )
    .await;
    let (record, fallback) = match lookup {
        Ok(Ok(record)) => (record, false),
        Ok(Err(e)) => {
            warn!(error = %e, "user store failed; serving a fallback");
            (UserRecord::default(), true)
        }
        Err(_) => {
            warn!("user store timed out; serving a fallback");
            (UserRecord::default(), true)
        }
    };
    let mut exclude: HashSet<String> = record.recent.iter().cloned().collect();
    if let Some(list) = &query.exclude {
        exclude.extend(list.split(',').filter(|s| !s.is_empty()).map(str::to_owned));
    }

    let (source, items) = rank(&state.search, catalog.clone(), record, exclude, k).await?;
    Ok(web::Json(RecommendationResponse {
        user_id,
        model_generation: catalog.generation,
        source,
        fallback,
        items,
    }))
}

/// Personal vector if there is one, else a fold-in of recent items, else popular items.
async fn rank(
    search: &SearchPool,
    catalog: Arc<Catalog>,
    record: UserRecord,
    exclude: HashSet<String>,
    k: usize,
) -> Result<(Source, Vec<ScoredItem>)> {
    let index = catalog.index.clone();
    let (source, query) = match (&index, record.vector) {
        (Some(index), Some(v)) if v.len() == index.dim() => (Source::Personal, Some(v)),
        (Some(index), _) => {
            let folded = fold_in(&catalog, index, &record.recent);
            (Source::FoldIn, folded)
        }
        (None, _) => (Source::Popular, None),
    };
    if let (Some(index), Some(query)) = (index, query) {
        let fetch = (k + exclude.len()).min(index.len());
        let hits = search.search(index, query, fetch).await?;
        let items = hits
            .into_iter()
            .filter_map(|(id, score)| {
                let item = catalog.ids.id(id as u32)?;
                (!exclude.contains(item)).then(|| ScoredItem {
                    item_id: item.to_owned(),
                    score,
                })
            })
            .take(k)
            .collect();
        return Ok((source, items));
    }
    let items = catalog
        .popular
        .iter()
        .filter(|(item, _)| !exclude.contains(item))
        .take(k)
        .map(|(item, score)| ScoredItem {
            item_id: item.clone(),
            score: *score,
        })
        .collect();
    Ok((Source::Popular, items))
}

/// Mean of the vectors of the user's most recent known items.
fn fold_in(
    catalog: &Catalog,
    index: &recsys_engine::index::ItemIndex,
    recent: &[String],
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
