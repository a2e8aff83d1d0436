//! JSON bodies of the HTTP API.

use serde::{Deserialize, Serialize};

/// Which path produced a recommendation list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The user's own vector searched in the item index.
    Personal,
    /// A vector folded in from the user's recent items.
    FoldIn,
    /// Popular items: no usable user signal.
    Popular,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScoredItem {
    pub item_id: String,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecommendationResponse {
    pub user_id: String,
    pub model_generation: u64,
    pub source: Source,
    /// True when a dependency failed and the answer came from a fallback path.
    pub fallback: bool,
    pub items: Vec<ScoredItem>,
}

/// Every 4xx/5xx body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: String,
}
