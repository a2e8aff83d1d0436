//! The all-in-one `recsys` command line as a library, so integration tests drive the same
//! code: configuration, the embedded broker, the in-process wiring and the demo.

pub mod allinone;
pub mod archive;
pub mod bench;
pub mod config;
pub mod demo;
pub mod embedded;
pub mod eval;
pub mod http;
pub mod redis_server;
pub mod report;
pub mod retrain;
pub mod run;
