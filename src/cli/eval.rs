//! `recsys eval` on the command line.

use std::path::PathBuf;

use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};
use recsys::config::Config;
use recsys_engine::data::Format;
use recsys_engine::eval::{EvalOptions, ModelName};
use recsys_engine::synth::SynthConfig;
use recsys_schemas::Event;
use recsys_trainer::replay::{self, ReplayOptions};

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
    /// The model flags below override the configuration's `[model.mf]` and
    /// `[model.two_tower]` (the defaults are the recipe `retrain` uses). Embedding
    /// dimension of both models.
    #[arg(long)]
    dim: Option<usize>,
    /// Passes of the batch recipe: ALS sweeps for MF (default 15), epochs for two-tower
    /// or MF with `recipe = "epochs"` (default 20).
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long, default_value_t = 1024)]
    batch: usize,
    /// Adagrad learning rate of the embedding tables, both models.
    #[arg(long)]
    lr: Option<f32>,
    /// MF softmax temperature.
    #[arg(long)]
    temperature: Option<f32>,
    /// Two-tower temperature (its outputs are unit vectors).
    #[arg(long)]
    tower_temperature: Option<f32>,
    /// MF L2 penalty.
    #[arg(long)]
    l2: Option<f32>,
    /// `softmax` or `bpr`, both models.
    #[arg(long)]
    loss: Option<String>,
    /// MF: uniformly sampled negatives per step, on top of the in-batch items (softmax);
    /// at least the catalog's size means a full softmax.
    #[arg(long)]
    negatives: Option<usize>,
    /// The same for the two-tower model.
    #[arg(long)]
    tower_negatives: Option<usize>,
    /// logQ correction of the sampled softmax, both models: `true` or `false`.
    #[arg(long)]
    logq: Option<bool>,
    #[arg(long, default_value_t = EvalOptions::default().seed)]
    seed: u64,
    #[arg(long)]
    json: bool,
    /// Order of same-time interactions: `file` (as read) or `shuffle` (seeded).
    #[arg(long, default_value = "file")]
    ties: String,
    /// The streaming evaluation instead: a base trained on the oldest events, then the
    /// rest replayed test-then-train through frozen, online, online-from-scratch and
    /// popularity arms. It trains the `[model]` of the configuration, as `recsys train`
    /// does (the model flags above are for the offline evaluation; `--epochs` and
    /// `--batch` are the base's).
    #[arg(long)]
    stream: bool,
    /// Share of the events (the oldest) that trains the base.
    #[arg(long, default_value_t = 0.8)]
    base_fraction: f64,
    /// Chronological shards the stream's figures are also given for.
    #[arg(long, default_value_t = 10)]
    shards: usize,
    /// Stream events scored at most (a seeded sample); 0: all.
    #[arg(long, default_value_t = 0)]
    max_test_events: usize,
    /// How often serving sees the online arm's updates, in event time: `batch` (after
    /// every batch) or a duration such as `30s`, `1min`, `1h`, `1d`.
    #[arg(long, default_value = "batch")]
    sync_every: String,
    /// Offline evaluation: also write the split (`train.tsv`, `test.tsv`) into this
    /// directory, for `benches/implicit_reference.py`.
    #[arg(long)]
    write_split: Option<PathBuf>,
    /// Draw NDCG@10 per shard for each arm into this PNG.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Synthetic data: days the log spans, the daily chance that a user's tastes change,
    /// the share of items launched during the span.
    #[arg(long, default_value_t = 1)]
    days: u32,
    #[arg(long, default_value_t = 0.0)]
    drift: f64,
    #[arg(long, default_value_t = 0.0)]
    new_items: f64,
}

/// Milliseconds of a duration such as `500ms`, `30s`, `1min`, `1h`, `1d`.
fn duration_ms(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    let n: f64 = digits
        .parse()
        .map_err(|_| anyhow::anyhow!("--sync-every: {s:?} is not a duration like 30s or 1h"))?;
    let ms = match unit {
        "ms" => 1.0,
        "s" => 1e3,
        "min" | "m" => 6e4,
        "h" => 3.6e6,
        "d" => 8.64e7,
        _ => anyhow::bail!("--sync-every: unit of {s:?} must be ms, s, min, h or d"),
    };
    Ok((n * ms) as i64)
}

/// Sorts `events` by time; same-time events keep file order, or are shuffled (seeded).
fn in_time_order(mut events: Vec<Event>, ties: &str, seed: u64) -> anyhow::Result<Vec<Event>> {
    match ties {
        "file" => {}
        "shuffle" => events.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x71E5)),
        other => anyhow::bail!("--ties: expected file or shuffle, got {other:?}"),
    }
    events.sort_by_key(|e| e.ts);
    Ok(events)
}

pub async fn run(a: EvalArgs, cfg: Config) -> anyhow::Result<()> {
    if a.stream {
        return stream(a, cfg).await;
    }
    if a.batch == 0 || a.epochs.is_some_and(|e| e > 10_000) {
        anyhow::bail!("--batch must be positive and --epochs at most 10000");
    }
    let (mf, two_tower) = model_configs(&a, &cfg)?;
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
        mf,
        two_tower,
        epochs: a.epochs,
        batch: a.batch,
        seed: a.seed,
        shuffle_ties: match a.ties.as_str() {
            "file" => false,
            "shuffle" => true,
            other => anyhow::bail!("--ties: expected file or shuffle, got {other:?}"),
        },
        write_split: a.write_split.clone(),
    };
    let report = tokio::task::spawn_blocking(move || recsys_engine::eval::run(&opts)).await??;
    recsys::eval::print(&report);
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

/// The configuration's two models with the command line's overrides, checked.
fn model_configs(
    a: &EvalArgs,
    cfg: &Config,
) -> anyhow::Result<(
    recsys_engine::mf::MfConfig,
    recsys_engine::two_tower::TwoTowerConfig,
)> {
    let loss = match &a.loss {
        None => None,
        Some(l) => Some(
            serde_json::from_value(serde_json::Value::String(l.clone()))
                .map_err(|_| anyhow::anyhow!("--loss: expected softmax or bpr, got {l:?}"))?,
        ),
    };
    let mut mf = cfg.model.mf.clone();
    let mut tower = cfg.model.two_tower.clone();
    if let Some(d) = a.dim {
        (mf.dim, tower.dim) = (d, d);
    }
    if let Some(lr) = a.lr {
        (mf.learning_rate, tower.learning_rate) = (lr, lr);
    }
    if let Some(l) = loss {
        (mf.loss, tower.loss) = (l, l);
    }
    if let Some(q) = a.logq {
        (mf.logq_correction, tower.logq_correction) = (q, q);
    }
    mf.temperature = a.temperature.unwrap_or(mf.temperature);
    tower.temperature = a.tower_temperature.unwrap_or(tower.temperature);
    mf.l2 = a.l2.unwrap_or(mf.l2);
    mf.negatives = a.negatives.unwrap_or(mf.negatives);
    tower.negatives = a.tower_negatives.unwrap_or(tower.negatives);
    mf.validate()?;
    tower.validate()?;
    Ok((mf, tower))
}

async fn stream(a: EvalArgs, cfg: Config) -> anyhow::Result<()> {
    let synthetic = SynthConfig {
        users: a.users,
        items: a.items,
        events: a.events,
        days: a.days,
        drift: a.drift,
        new_items: a.new_items,
        seed: a.seed,
        ..SynthConfig::default()
    };
    let events = if a.synthetic {
        synthetic
            .generate()
            .map_err(anyhow::Error::msg)?
            .all_events()
    } else if let Some(path) = &a.path {
        recsys_engine::data::read(a.format, path)?
    } else {
        anyhow::bail!("--stream: give a data file (--format F PATH) or --synthetic");
    };
    let events = in_time_order(events, &a.ties, a.seed)?;
    let opts = ReplayOptions {
        base_fraction: a.base_fraction,
        shards: a.shards,
        max_test_events: a.max_test_events,
        sync_every_ms: match a.sync_every.as_str() {
            "batch" => None,
            d => Some(duration_ms(d)?),
        },
        sync_curve: true,
        trainer: cfg.trainer.clone(),
        model: cfg.model.clone(),
        base_epochs: a.epochs,
        base_batch: a.batch,
        backend: cfg.compute.backend,
        seed: a.seed,
        online_learning_rate: None,
        plot: a.plot.clone(),
    };
    let report = tokio::task::spawn_blocking(move || replay::run(&events, &opts)).await??;
    recsys::eval::print_stream(&report);
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}
