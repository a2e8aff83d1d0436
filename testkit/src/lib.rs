//! Harnesses for the tests, the benchmarks and the demo, kept out of the production
//! crates: a redis-server of our own on a free loopback port, and a minimal blocking
//! HTTP/1.1 client that calls the API the way a product backend would.

pub mod http;
pub mod redis_server;

pub use http::{HttpClient, Response};
pub use redis_server::{RedisServer, free_port};
