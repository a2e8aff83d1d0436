//! The nightly path on the command line: `archive`, `generate`, `retrain`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use recsys::config::Config;
use recsys_trainer::archive::{self, ArchiveOptions};
use recsys_trainer::retrain::{self, RetrainOptions};
use recsys_trainer::sink::UserVectorSink;

#[derive(clap::Args)]
pub struct ArchiveArgs {
    /// Archive directory.
    #[arg(long)]
    out: PathBuf,
    /// Stop once the topic's ends at start are archived (a catch-up job).
    #[arg(long)]
    until_caught_up: bool,
    /// Events buffered before a flush.
    #[arg(long, default_value_t = 100_000)]
    flush_events: usize,
    /// Seconds between flushes.
    #[arg(long, default_value_t = 10)]
    flush_interval_s: u64,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value_t = 50_000)]
    users: usize,
    #[arg(long, default_value_t = 20_000)]
    items: usize,
    /// Days the events span (one directory per day).
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// Daily chance that a user's tastes move to other clusters.
    #[arg(long, default_value_t = 0.0)]
    drift: f64,
    /// Share of the items launched during the span instead of at its start.
    #[arg(long, default_value_t = 0.0)]
    new_items: f64,
}

#[derive(clap::Args)]
pub struct RetrainArgs {
    /// Archive directory (from `recsys archive` or `recsys generate`).
    #[arg(long)]
    from: PathBuf,
    /// Newest days of the archive to use; the last one is the test day.
    #[arg(long, default_value_t = 7)]
    days: usize,
    /// Report directory (report.md, report.json, PNG plots).
    #[arg(long)]
    out: PathBuf,
    /// Generations directory (CURRENT pointer, g{N}/ checkpoints and snapshots).
    #[arg(long, default_value = "models")]
    models: PathBuf,
    /// Passes of the batch recipe: ALS sweeps for MF (default 15), epochs for two-tower
    /// or MF with `recipe = "epochs"` (default 20).
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long, default_value_t = 1024)]
    batch: usize,
    /// Test users scored (a seeded sample when more are eligible).
    #[arg(long, default_value_t = 10_000)]
    max_test_users: usize,
    /// Allowed NDCG@10 drop against the current generation.
    #[arg(long, default_value_t = 0.002)]
    margin: f64,
    /// Publish even if the quality gate refuses (logged and reported).
    #[arg(long)]
    force: bool,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long)]
    json: bool,
}

pub async fn archive(a: ArchiveArgs, cfg: &Config) -> anyhow::Result<()> {
    let opts = ArchiveOptions {
        brokers: cfg.trainer.brokers.clone(),
        kafka: cfg.kafka.clone(),
        topic: cfg.trainer.topic.clone(),
        group_id: format!("{}-archive", cfg.trainer.group_id),
        out: a.out,
        until_caught_up: a.until_caught_up,
        flush_events: a.flush_events.max(1),
        flush_interval: std::time::Duration::from_secs(a.flush_interval_s.max(1)),
        limits: cfg.events,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        if recsys_serving::replica::shutdown_signal().await.is_ok() {
            flag.store(true, Ordering::Relaxed);
        }
    });
    let report =
        tokio::task::spawn_blocking(move || archive::run(&opts, &|| stop.load(Ordering::Relaxed)))
            .await??;
    eprintln!(
        "archived {} events ({} malformed skipped); next offsets {:?}",
        report.archived, report.malformed, report.next_offsets
    );
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

pub fn generate(a: GenerateArgs) -> anyhow::Result<()> {
    // `--events` counts the whole log. The generator draws each user's last events
    // apart (its held-out future): at most 5 per user and a quarter of their share.
    if a.users == 0 || a.events < 2 * a.users {
        anyhow::bail!(
            "--events {} must be at least twice --users {}",
            a.events,
            a.users
        );
    }
    let holdout = (a.events / a.users / 4).clamp(1, 5);
    let train = a.events - a.users * holdout;
    let data = recsys_engine::synth::SynthConfig {
        users: a.users,
        items: a.items,
        events: train,
        holdout,
        seed: a.seed,
        days: a.days,
        drift: a.drift,
        new_items: a.new_items,
        clusters: (a.items / 100).clamp(1, 200),
        ..Default::default()
    }
    .generate()
    .map_err(|e| anyhow::anyhow!("generate: {e}"))?;
    // The whole log, as an archive holds it: each user's last events (the generator's
    // held-out ones) fall in the last days, which `retrain` tests on.
    let n = archive::write_events(&a.out, &data.all_events())?;
    eprintln!(
        "wrote {n} events over {} days into {}",
        archive::days(&a.out)?.len(),
        a.out.display()
    );
    Ok(())
}

pub async fn retrain(a: RetrainArgs, cfg: &Config) -> anyhow::Result<()> {
    if a.batch == 0 || !(a.margin >= 0.0 && a.margin.is_finite()) {
        anyhow::bail!("--batch must be positive and --margin a non-negative number");
    }
    let opts = RetrainOptions {
        from: a.from,
        days: a.days,
        out: a.out,
        models: a.models,
        epochs: a.epochs,
        batch: a.batch,
        margin: a.margin,
        force: a.force,
        read_rows: 65_536,
        max_test_users: a.max_test_users.max(1),
        seed: a.seed,
        model: cfg.model.clone(),
        index: cfg.index.clone(),
        backend: cfg.compute.backend,
        topic: cfg.trainer.topic.clone(),
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    // Publishing writes every user's vector under the new generation's keys.
    let users: Option<Arc<dyn UserVectorSink>> = if cfg.store.redis_url.is_empty() {
        tracing::warn!(
            "store.redis_url is empty: a published generation's user vectors are not written \
             here; an online trainer following the models directory writes them when it \
             switches"
        );
        None
    } else {
        Some(recsys::run::redis_writer(cfg, &cfg.store.redis_url).await?)
    };
    let report =
        tokio::task::spawn_blocking(move || retrain::run(&opts, users.as_deref())).await??;
    eprintln!(
        "{} | new NDCG@10 {:.4}, current {}, popularity {:.4} | {} events x {} epochs at {:.0} \
         events/s, peak RSS {:.0} MiB",
        report.decision,
        report.new.ndcg_at_10,
        report
            .current
            .map_or("none".to_owned(), |c| format!("{:.4}", c.ndcg_at_10)),
        report.popularity.ndcg_at_10,
        report.events,
        report.epochs.len(),
        report.events_per_s,
        report.peak_rss_bytes as f64 / 1048576.0
    );
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}
