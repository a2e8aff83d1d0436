//! Harnesses for the tests, the benchmarks and the demo, kept out of the production
//! crates: a redis-server and a tansu Kafka broker of our own on free loopback ports, and
//! a minimal blocking HTTP/1.1 client that calls the API the way a product backend would.

pub mod http;
pub mod redis_server;
pub mod tansu;

pub use http::{HttpClient, Response};
pub use redis_server::{RedisServer, free_port};
pub use tansu::{TansuServer, tansu_binary};
