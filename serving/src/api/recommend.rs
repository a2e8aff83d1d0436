//! Recommendations for a user (one, or a batch): the user's vector from the store, or a
//! fold-in of their recent items, or the popular list; recent, hidden and excluded items
//! never returned.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, web};
use recsys_index::fold_in::fold_in;
use recsys_index::store::{Recent, UserRecord};
use recsys_schemas::api::{ErrorBody, RecommendationResponse, ScoredItem, Source};
use serde::{Deserialize, Serialize};
use tracing::warn;
use utoipa::ToSchema;

use super::filtered::{Exclude, search_filtered};
use super::items::popular_items;
use super::params::{KQuery, check_id, parse_k};
use super::state::AppState;
use crate::auth::Role;
use crate::catalog::Catalog;
use crate::metrics::FallbackCause;
use crate::{Result, ServingError};

/// Recent items read per request: what is excluded, and what fold-in averages.
const MAX_RECENT: usize = 500;

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
pub(super) async fn recommend(
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
pub(super) async fn recommend_batch(
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
        (Some(index), _) => (Source::FoldIn, fold_in(&catalog.ids, index, recent.iter())),
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use proptest::prelude::*;
    use recsys_index::IndexConfig;
    use recsys_index::store::MemoryUserStore;

    use super::*;
    use crate::ServingConfig;
    use crate::catalog::CatalogHolder;
    use crate::follow::FollowStatus;

    const DIM: usize = 4;

    /// A catalog of `vectors.len()` items `i0..`, some hidden (tombstoned), some in
    /// category `c`; a user `u` with `recent` items and `vector` (or none).
    #[derive(Debug)]
    struct Case {
        vectors: Vec<[f32; DIM]>,
        hidden: Vec<bool>,
        in_category: Vec<bool>,
        recent: Vec<usize>,
        exclude: Vec<usize>,
        vector: Option<[f32; DIM]>,
        category: bool,
        k: usize,
    }

    fn case() -> impl Strategy<Value = Case> {
        (2usize..40).prop_flat_map(|n| {
            (
                prop::collection::vec(prop::array::uniform4(-1.0f32..1.0), n),
                prop::collection::vec(prop::bool::weighted(0.2), n),
                prop::collection::vec(any::<bool>(), n),
                prop::collection::vec(0..n, 0..8),
                prop::collection::vec(0..n + 3, 0..5),
                prop::option::of(prop::array::uniform4(-1.0f32..1.0)),
                any::<bool>(),
                1usize..15,
            )
                .prop_map(
                    |(vectors, hidden, in_category, recent, exclude, vector, category, k)| Case {
                        vectors,
                        hidden,
                        in_category,
                        recent,
                        exclude,
                        vector,
                        category,
                        k,
                    },
                )
        })
    }

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        recsys_index::vector::dot(a, b)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// An answer is sorted best first, holds at most `k` items, none of them recent,
        /// excluded, hidden or outside the asked category, and (the catalog being small
        /// enough for an exact index) it is exactly the best `k` of the items left.
        #[test]
        fn top_k_is_sorted_and_free_of_seen_hidden_and_excluded(c in case()) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let name = |i: usize| format!("i{i}");
            let catalog = Arc::new(CatalogHolder::new(1, IndexConfig::default()));
            let items: Vec<(String, Vec<f32>)> =
                c.vectors.iter().enumerate().map(|(i, v)| (name(i), v.to_vec())).collect();
            catalog.apply_items(1, items).unwrap();
            let hidden: Vec<String> =
                (0..c.vectors.len()).filter(|&i| c.hidden[i]).map(name).collect();
            catalog.apply_deltas(1, Vec::new(), hidden).unwrap();
            let categories = (0..c.vectors.len())
                .filter(|&i| c.in_category[i])
                .map(|i| (name(i), vec!["c".to_owned()]))
                .collect();
            catalog.set_categories(1, categories).unwrap();
            let store = Arc::new(MemoryUserStore::new());
            if let Some(v) = c.vector {
                store.put_vector(1, "u", v.to_vec());
            }
            let recent: Vec<String> = c.recent.iter().map(|&i| name(i)).collect();
            store.push_history("u", &recent, 500);
            let follow = Arc::new(FollowStatus::default());
            let users = store.clone();
            let state =
                AppState::new(catalog.clone(), store, ServingConfig::default(), follow).unwrap();
            let exclude: Vec<String> = c.exclude.iter().map(|&i| name(i)).collect();
            let category = c.category.then_some("c");
            let answer = rt
                .block_on(recommend_one(&state, "u".into(), c.k, exclude.clone(), category))
                .unwrap();

            let banned: HashSet<String> = recent.iter().chain(&exclude).cloned().collect();
            let eligible = |i: usize| {
                !c.hidden[i] && !banned.contains(&name(i)) && (!c.category || c.in_category[i])
            };
            prop_assert!(answer.items.len() <= c.k);
            prop_assert!(answer.items.windows(2).all(|w| w[0].score >= w[1].score), "{:?}", answer.items);
            for item in &answer.items {
                let i: usize = item.item_id[1..].parse().unwrap();
                prop_assert!(eligible(i), "{} returned: {:?}", item.item_id, answer.items);
            }
            let ids: HashSet<&str> = answer.items.iter().map(|s| s.item_id.as_str()).collect();
            prop_assert_eq!(ids.len(), answer.items.len(), "an item returned twice");
            if answer.source != Source::Popular {
                // Exactly the best k eligible items by inner product with the query.
                let query: Vec<f32> = match (answer.source, c.vector) {
                    (Source::Personal, Some(v)) => v.to_vec(),
                    _ => {
                        let snapshot = catalog.load();
                        let held = users.get(1, "u").recent;
                        fold_in(&snapshot.ids, snapshot.index.as_ref().unwrap(), held.iter())
                            .unwrap()
                    }
                };
                let mut best: Vec<(usize, f32)> = (0..c.vectors.len())
                    .filter(|&i| eligible(i))
                    .map(|i| (i, dot(&query, &c.vectors[i])))
                    .collect();
                best.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                best.truncate(c.k);
                let want: Vec<f32> = best.iter().map(|b| b.1).collect();
                let got: Vec<f32> = answer.items.iter().map(|s| s.score).collect();
                prop_assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(&want) {
                    prop_assert!((g - w).abs() <= 1e-5, "scores {got:?}, exact {want:?}");
                }
            }
        }
    }
}
