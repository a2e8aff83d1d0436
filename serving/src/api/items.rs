//! Item lists: items similar to an item, and the popular items.

use actix_web::{HttpRequest, web};
use recsys_schemas::api::{ErrorBody, ScoredItem};
use serde::Serialize;
use utoipa::ToSchema;

use super::filtered::{Exclude, search_filtered};
use super::params::{KQuery, check_id, parse_k};
use super::state::AppState;
use crate::auth::Role;
use crate::catalog::Catalog;
use crate::{Result, ServingError};

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
pub(super) async fn similar(
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
pub(super) async fn popular(
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

pub(super) fn popular_items(
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
