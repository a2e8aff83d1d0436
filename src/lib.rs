//! The all-in-one `recsys` command line as a library, so integration tests drive the same
//! code: the configuration of every section, the embedded broker, the in-process wiring
//! of trainer and server, the long-running commands, the demo and the benchmarks.

pub mod admin;
pub mod allinone;
pub mod bench;
pub mod config;
pub mod demo;
pub mod embedded;
pub mod eval;
pub mod run;
