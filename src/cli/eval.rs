//! `recsys eval` on the command line.

use std::path::PathBuf;

use recsys_engine::data::Format;
use recsys_engine::eval::{EvalOptions, ModelName};

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
        .map_err(|e: recsys_engine::EngineError| e.to_string())
}

fn parse_model(s: &str) -> Result<ModelName, String> {
    s.parse()
        .map_err(|e: recsys_engine::EngineError| e.to_string())
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Format of the input files.
    #[arg(long, default_value = "jsonl", value_parser = parse_format)]
    format: Format,
    /// Interactions to split per user (leave-last-out by timestamp).
    path: Option<PathBuf>,
    /// An explicit training file (with --test; no split is made).
    #[arg(long, requires = "test", conflicts_with = "path")]
    train: Option<PathBuf>,
    #[arg(long, requires = "train")]
    test: Option<PathBuf>,
    /// Evaluate on the seeded synthetic generator (reports the oracle too).
    #[arg(long, conflicts_with_all = ["path", "train"])]
    synthetic: bool,
    /// Synthetic data: users, items, events.
    #[arg(long, default_value_t = 5_000)]
    users: usize,
    #[arg(long, default_value_t = 2_000)]
    items: usize,
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Models to evaluate, comma-separated.
    #[arg(long, value_delimiter = ',', default_values = ["mf", "two-tower", "popularity"], value_parser = parse_model)]
    models: Vec<ModelName>,
    #[arg(long, default_value_t = EvalOptions::default().dim)]
    dim: usize,
    #[arg(long, default_value_t = EvalOptions::default().epochs)]
    epochs: usize,
    #[arg(long, default_value_t = EvalOptions::default().batch)]
    batch: usize,
    /// Adagrad learning rate of the embedding tables.
    #[arg(long, default_value_t = EvalOptions::default().learning_rate)]
    lr: f32,
    /// MF softmax temperature.
    #[arg(long, default_value_t = EvalOptions::default().temperature)]
    temperature: f32,
    /// Two-tower temperature (its outputs are unit vectors).
    #[arg(long, default_value_t = EvalOptions::default().tower_temperature)]
    tower_temperature: f32,
    #[arg(long, default_value_t = EvalOptions::default().l2)]
    l2: f32,
    /// `softmax` or `bpr`.
    #[arg(long, default_value = "softmax")]
    loss: String,
    /// Uniformly sampled negatives per step, on top of the in-batch items (softmax), MF.
    #[arg(long, default_value_t = EvalOptions::default().negatives)]
    negatives: usize,
    /// The same for the two-tower model.
    #[arg(long, default_value_t = EvalOptions::default().tower_negatives)]
    tower_negatives: usize,
    /// logQ correction of the in-batch softmax.
    #[arg(long)]
    logq: bool,
    #[arg(long, default_value_t = EvalOptions::default().seed)]
    seed: u64,
    #[arg(long)]
    json: bool,
}

pub async fn run(a: EvalArgs) -> anyhow::Result<()> {
    let loss = serde_json::from_value(serde_json::Value::String(a.loss.clone()))
        .map_err(|_| anyhow::anyhow!("--loss: expected softmax or bpr, got {:?}", a.loss))?;
    if a.batch == 0 || a.epochs > 10_000 {
        anyhow::bail!("--batch must be positive and --epochs at most 10000");
    }
    let opts = EvalOptions {
        format: a.format,
        path: a.path.clone(),
        train: a.train.clone(),
        test: a.test.clone(),
        synthetic: a.synthetic.then(|| recsys_engine::synth::SynthConfig {
            users: a.users,
            items: a.items,
            events: a.events,
            seed: a.seed,
            ..Default::default()
        }),
        models: a.models.clone(),
        dim: a.dim,
        epochs: a.epochs,
        batch: a.batch,
        learning_rate: a.lr,
        temperature: a.temperature,
        tower_temperature: a.tower_temperature,
        l2: a.l2,
        loss,
        negatives: a.negatives,
        tower_negatives: a.tower_negatives,
        logq: a.logq,
        seed: a.seed,
    };
    let report = tokio::task::spawn_blocking(move || recsys_engine::eval::run(&opts)).await??;
    recsys::eval::print(&report);
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}
