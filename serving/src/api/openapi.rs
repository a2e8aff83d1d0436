//! The OpenAPI 3.1 document of the API, generated from the handlers and the types
//! (utoipa), served at `/openapi.json`.

use actix_web::HttpResponse;
use recsys_schemas::Event;
use recsys_schemas::api::{ErrorBody, RecommendationResponse, ScoredItem, Source};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::events::{__path_post_events, Accepted};
use super::items::{__path_popular, __path_similar, ItemsResponse};
use super::probes::{__path_healthz, __path_metrics, __path_readyz};
use super::recommend::{__path_recommend, __path_recommend_batch, BatchRequest, BatchResponse};

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

pub(super) async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
