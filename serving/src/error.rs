//! Errors of the serving crate, and their one mapping to HTTP statuses.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use recsys_schemas::api::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The request is malformed; the message says which parameter and why.
    #[error("{0}")]
    BadRequest(String),
    /// No API key, or an unknown one.
    #[error("{0}")]
    Unauthorized(String),
    /// The key is valid but may not do this.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Over the per-key rate; retry after the given seconds.
    #[error("{0}")]
    TooManyRequests(String, u64),
    /// Overloaded or not ready; worth retrying shortly.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// The user store is unreachable or slow. Requests are answered from the fallbacks
    /// instead, never with this error.
    #[error("store unreachable: {0}")]
    StoreUnavailable(String),
    /// A stored user vector could not be decoded (answered from the fallbacks too).
    #[error("stored vector is corrupt: {0}")]
    StoreCorrupt(String),
}

impl ResponseError for ServingError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests(..) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) | Self::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Config(_) | Self::Internal(_) | Self::StoreCorrupt(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status_code());
        match self {
            Self::Unauthorized(_) => {
                resp.insert_header(("WWW-Authenticate", "Bearer"));
            }
            Self::TooManyRequests(_, secs) => {
                resp.insert_header(("Retry-After", secs.max(&1).to_string()));
            }
            Self::Unavailable(_) => {
                resp.insert_header(("Retry-After", "1"));
            }
            _ => {}
        }
        resp.json(ErrorBody {
            error: self.to_string(),
        })
    }
}

pub type Result<T, E = ServingError> = std::result::Result<T, E>;
