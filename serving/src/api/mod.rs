//! The HTTP API. Searches run where `serving.search_threads` says: on the HTTP worker
//! itself (the default) or on a dedicated pool (`search.rs`). Every error body is JSON
//! `{"error": ...}` with a 4xx status naming what was wrong, and a dependency failure
//! (user store down or slow) is answered from a fallback, never with a 5xx.
//!
//! - `routes.rs`: every route, its handler and metrics label; JSON 404 and 405;
//! - `openapi.rs`: the OpenAPI document generated from the handlers;
//! - `recommend.rs`, `items.rs`, `events.rs`, `probes.rs`: the handlers;
//! - `filtered.rs`: the search loop behind every list (exclusions, category filter);
//! - `params.rs`: query parameters; `state.rs`: what the workers share.

mod events;
mod filtered;
mod items;
mod openapi;
mod params;
mod probes;
mod recommend;
mod routes;
mod state;

pub use openapi::ApiDoc;
pub use routes::{ROUTES, RouteLabel, configure};
pub use state::{AppState, Companion};
