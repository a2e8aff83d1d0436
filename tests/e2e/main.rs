//! End-to-end tests: the real Kafka protocol (librdkafka's mock cluster) and a real
//! redis-server started on a free loopback port.

mod api;
mod archive;
mod crash;
mod follow;
mod pipeline;
mod redis_store;
