//! `recsys`: the all-in-one command line. Arguments are parsed in `cli/`; everything
//! they run lives in the library crates.

mod cli;

use clap::Parser;
use recsys::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    recsys_serving::replica::init_tracing("warn,recsys=info");
    let cli = cli::Cli::parse();
    recsys_index::check_cpu()?;
    let cfg = Config::load(cli.config.as_deref(), std::env::vars())?;
    cli::run(cli.command, cfg).await
}
