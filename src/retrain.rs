//! `recsys retrain`: the nightly full retrain from the Parquet archive, with an offline
//! evaluation of the new model, the current generation and popularity side by side, a
//! quality gate, a report for people (`report.md`, `report.json`, PNG plots) and the
//! generation switch; `recsys rollback` switches back.
//!
//! Generations live under the models directory (`recsys_engine::generations`). The
//! published checkpoint's offsets are the archive's committed offsets when the retrain
//! started (the cutoff), and the model has seen every archived event below them, so an
//! online trainer warm-started from it replays exactly the events after the cutoff.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};
use recsys_engine::checkpoint::{self, CheckpointMeta};
use recsys_engine::device::{Backend, autodiff_device};
use recsys_engine::eval::{self, Catalog, Metrics, PopularityRanker};
use recsys_engine::generations::{self, Current, generation_dir};
use recsys_engine::index::{IndexConfig, ItemIndex};
use recsys_engine::model::{Model, ModelConfig};
use recsys_engine::snapshot;
use serde::Serialize;

use recsys_trainer::sink::{UserUpdate, UserVectorSink};

use crate::archive;

/// Settings of one retrain.
#[derive(Debug, Clone)]
pub struct RetrainOptions {
    pub from: PathBuf,
    /// Days of the window (the newest ones in the archive); the last is the test day.
    pub days: usize,
    pub out: PathBuf,
    pub models: PathBuf,
    pub epochs: usize,
    pub batch: usize,
    /// The new model is published only if its NDCG@10 is at least the current one's
    /// minus this.
    pub margin: f64,
    pub force: bool,
    /// Rows per Parquet read (and shuffle window).
    pub read_rows: usize,
    /// At most this many test users are scored (a seeded sample; each still ranks the
    /// full catalog): full ranking costs O(items × dim) per user.
    pub max_test_users: usize,
    pub seed: u64,
    pub model: ModelConfig,
    pub index: IndexConfig,
    pub backend: Backend,
    /// Events topic name, for the checkpoint's offset keys.
    pub topic: String,
    pub progress: bool,
}

/// One epoch of training.
#[derive(Debug, Clone, Serialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub loss: f64,
    pub events: u64,
    pub seconds: f64,
    pub events_per_s: f64,
}

/// What `retrain` did and why; `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RetrainReport {
    pub published: bool,
    pub forced: bool,
    /// Why it was or was not published.
    pub decision: String,
    pub new_generation: u64,
    pub current_generation: Option<u64>,
    pub new: Metrics,
    pub current: Option<Metrics>,
    pub popularity: Metrics,
    pub model_kind: String,
    pub train_days: Vec<String>,
    pub test_day: String,
    /// Training events per epoch.
    pub events: u64,
    pub users: usize,
    pub items: usize,
    pub test_users: usize,
    /// Users eligible for the test before sampling down to `max_test_users`.
    pub eligible_test_users: usize,
    pub epochs: Vec<EpochStats>,
    /// Mean over epochs of events per second.
    pub events_per_s: f64,
    pub train_seconds: f64,
    pub total_seconds: f64,
    pub peak_rss_bytes: u64,
    pub margin: f64,
    /// User vectors written under the new generation's keys (0 without a user store).
    pub users_written: usize,
    /// Test-day events the published model was also trained on (per epoch), after the
    /// evaluation; 0 when not published.
    pub refit_events: u64,
    pub plots: Vec<String>,
}

/// `recsys rollback`: makes the previous generation current again.
pub fn rollback(models: &Path) -> anyhow::Result<Current> {
    let Some(c) = generations::current(models)? else {
        bail!("{}: no generation was ever published", models.display());
    };
    let Some(previous) = c.previous else {
        bail!(
            "generation {} has no previous generation to roll back to",
            c.generation
        );
    };
    if checkpoint::list(&generation_dir(models, previous))?.is_empty() {
        bail!("generation {previous} has no checkpoint left");
    }
    let back = Current {
        generation: previous,
        previous: Some(c.generation),
    };
    generations::set_current(models, back)?;
    Ok(back)
}

/// Peak resident set size of this process (`VmHWM`), bytes.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Runs one retrain and writes its report into `opts.out`. With `users`, publishing
/// writes every user's vector there under the new generation's keys.
pub fn run(
    opts: &RetrainOptions,
    users: Option<&dyn UserVectorSink>,
) -> anyhow::Result<RetrainReport> {
    let started = Instant::now();
    opts.model.validate()?;
    if opts.days < 2 {
        bail!("--days must be at least 2: the last day of the window is the test day");
    }
    let all_days = archive::days(&opts.from)?;
    if all_days.len() < 2 {
        bail!(
            "{}: the archive holds {} day(s); a retrain needs at least 2",
            opts.from.display(),
            all_days.len()
        );
    }
    let window = &all_days[all_days.len().saturating_sub(opts.days)..];
    let (train_days, test_day) = (
        window[..window.len() - 1].to_vec(),
        window[window.len() - 1].clone(),
    );
    // The cutoff: everything committed to the archive when the retrain started.
    let cutoff = archive::committed(&opts.from)?;
    fs::create_dir_all(&opts.out).with_context(|| format!("{}", opts.out.display()))?;

    // Pass 1: the catalog (items, each user's training items, counts) and the size.
    let mut catalog = Catalog::default();
    let mut events = 0u64;
    archive::read_days_upto(
        &opts.from,
        &train_days,
        &cutoff,
        opts.read_rows,
        &mut |_, batch| {
            for e in &batch {
                catalog.add(e);
            }
            events += batch.len() as u64;
            Ok(())
        },
    )?;
    if events == 0 {
        bail!("no training events in {:?}", train_days);
    }
    // Temporal test set: each known user's first test-day item not already trained on.
    let mut test: Vec<(String, String)> = Vec::new();
    let mut tested: HashSet<String> = HashSet::new();
    let mut test_events: Vec<recsys_schemas::Event> = Vec::new();
    archive::read_days_upto(
        &opts.from,
        std::slice::from_ref(&test_day),
        &cutoff,
        opts.read_rows,
        &mut |_, batch| {
            test_events.extend(batch);
            Ok(())
        },
    )?;
    test_events.sort_by_key(|e| e.ts);
    for e in test_events {
        let Some(seen) = catalog.seen.get(&e.user_id) else {
            continue;
        };
        if tested.contains(&e.user_id) {
            continue;
        }
        if catalog
            .items
            .get(&e.item_id)
            .is_some_and(|r| seen.contains(&r))
        {
            continue;
        }
        tested.insert(e.user_id.clone());
        test.push((e.user_id, e.item_id));
    }
    if test.is_empty() {
        bail!("no test users: nobody active on {test_day} was active before it");
    }
    let eligible_test_users = test.len();
    if test.len() > opts.max_test_users {
        test.shuffle(&mut StdRng::seed_from_u64(opts.seed ^ 0x7E57));
        test.truncate(opts.max_test_users);
    }

    // Training: E epochs streaming the files; each read batch is shuffled.
    let mut model = Model::new(&opts.model, autodiff_device(opts.backend)?)?;
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let bar = if opts.progress {
        ProgressBar::new(events * opts.epochs as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {human_pos}/{human_len} {per_sec} ETA {eta} {msg}",
        )?
        .progress_chars("=> "),
    );
    let train_started = Instant::now();
    let epochs = train_epochs(opts, &mut model, &train_days, &cutoff, &mut rng, &bar)?;
    bar.finish_and_clear();
    let train_seconds = train_started.elapsed().as_secs_f64();

    // Evaluation: new, current, popularity on the same test pairs.
    let new = eval::evaluate_model(&model, &catalog, &test)?;
    let popularity = eval::evaluate(&catalog, &test, &PopularityRanker(&catalog.counts));
    let cur = generations::current(&opts.models)?;
    // The current generation's newest checkpoint: with an online trainer following the
    // models directory, that is the online model as it stands tonight.
    let current_model = match cur {
        Some(c) => {
            checkpoint::load_latest(&generation_dir(&opts.models, c.generation), model.device())?
        }
        None => None,
    };
    if let (Some(c), None) = (cur, &current_model) {
        tracing::warn!(
            generation = c.generation,
            "the current generation has no checkpoint yet: nothing to compare against"
        );
    }
    let current_metrics = match &current_model {
        Some((m, _, _)) => Some(eval::evaluate_model(m, &catalog, &test)?),
        None => None,
    };
    drop(current_model);
    let new_generation = generations::next_generation(&opts.models)?;
    let (pass, why) = match current_metrics {
        None => (
            true,
            match cur {
                None => "no current generation: the first one is published".to_owned(),
                Some(c) => format!(
                    "the current generation {} has no checkpoint to compare against",
                    c.generation
                ),
            },
        ),
        Some(c) if new.ndcg_at_10 + opts.margin >= c.ndcg_at_10 => (
            true,
            format!(
                "NDCG@10 {:.4} is within the margin {:.4} of the current {:.4} (or better)",
                new.ndcg_at_10, opts.margin, c.ndcg_at_10
            ),
        ),
        Some(c) => (
            false,
            format!(
                "NDCG@10 {:.4} is worse than the current {:.4} by more than the margin {:.4}",
                new.ndcg_at_10, c.ndcg_at_10, opts.margin
            ),
        ),
    };
    let published = pass || opts.force;
    let decision = if !pass && opts.force {
        tracing::warn!(%why, "quality gate overridden with --force");
        format!("published with --force although {why}")
    } else if pass {
        format!("published: {why}")
    } else {
        format!("kept generation {}: {why}", cur.map_or(0, |c| c.generation))
    };
    let mut users_written = 0;
    let mut refit_events = 0;
    if published {
        // The gate has judged the recipe; the published model also learns the test day,
        // so it has seen every archived event below the cutoff its offsets name and the
        // online trainer replays only what came after.
        let t = Instant::now();
        let bar = ProgressBar::hidden();
        let refit = train_epochs(
            opts,
            &mut model,
            std::slice::from_ref(&test_day),
            &cutoff,
            &mut rng,
            &bar,
        )?;
        refit_events = refit.first().map_or(0, |e| e.events);
        tracing::info!(
            events = refit_events,
            seconds = t.elapsed().as_secs_f64(),
            "trained on the test day before publishing"
        );
        users_written = publish(opts, users, &model, new_generation, &cutoff)?;
        generations::set_current(
            &opts.models,
            Current {
                generation: new_generation,
                previous: cur.map(|c| c.generation),
            },
        )?;
    }
    let mut report = RetrainReport {
        published,
        forced: opts.force && !pass,
        decision,
        new_generation,
        current_generation: cur.map(|c| c.generation),
        new,
        current: current_metrics,
        popularity,
        model_kind: format!("{:?}", model.kind()),
        train_days,
        test_day,
        events,
        users: catalog.seen.len(),
        items: catalog.len(),
        test_users: test.len(),
        eligible_test_users,
        events_per_s: if epochs.is_empty() {
            0.0
        } else {
            epochs.iter().map(|e| e.events_per_s).sum::<f64>() / epochs.len() as f64
        },
        epochs,
        train_seconds,
        total_seconds: 0.0,
        peak_rss_bytes: 0,
        margin: opts.margin,
        users_written,
        refit_events,
        plots: Vec::new(),
    };
    report.plots = crate::report::plots(&opts.out, &report)?;
    report.total_seconds = started.elapsed().as_secs_f64();
    report.peak_rss_bytes = peak_rss_bytes();
    fs::write(
        opts.out.join("report.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    fs::write(
        opts.out.join("report.md"),
        crate::report::markdown(&report, opts),
    )?;
    Ok(report)
}

/// `opts.epochs` passes over `days` (events below `cutoff` only), each read batch
/// shuffled, with the progress bar advanced per step.
fn train_epochs(
    opts: &RetrainOptions,
    model: &mut Model,
    days: &[String],
    cutoff: &BTreeMap<i32, i64>,
    rng: &mut StdRng,
    bar: &ProgressBar,
) -> anyhow::Result<Vec<EpochStats>> {
    let mut epochs = Vec::with_capacity(opts.epochs);
    for epoch in 0..opts.epochs {
        bar.set_prefix(format!("epoch {}/{}", epoch + 1, opts.epochs));
        let t = Instant::now();
        let (mut loss, mut steps, mut seen) = (0.0f64, 0u64, 0u64);
        // Parquet is decoded on a second thread while this one trains: reading and
        // training overlap, and at most two read batches wait in between.
        std::thread::scope(|scope| -> anyhow::Result<()> {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<recsys_schemas::Event>>(2);
            let reader = scope.spawn(move || {
                archive::read_days_upto(&opts.from, days, cutoff, opts.read_rows, &mut |_, b| {
                    // The trainer hung up (it failed): stop reading.
                    tx.send(b).map_err(|_| anyhow::anyhow!("training stopped"))
                })
            });
            let mut trained = Ok(());
            for mut batch in rx.iter() {
                batch.shuffle(rng);
                for chunk in batch.chunks(opts.batch) {
                    match model.train_events(chunk) {
                        Ok((s, _, _)) if s.loss.is_finite() => {
                            loss += f64::from(s.loss);
                            steps += 1;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            trained = Err(e);
                            break;
                        }
                    }
                    seen += chunk.len() as u64;
                    bar.inc(chunk.len() as u64);
                }
                if trained.is_err() {
                    break;
                }
                bar.set_message(format!("loss {:.4}", loss / steps.max(1) as f64));
            }
            drop(rx);
            trained?;
            reader
                .join()
                .map_err(|_| anyhow::anyhow!("the archive reader panicked"))?
        })?;
        let seconds = t.elapsed().as_secs_f64();
        let stats = EpochStats {
            epoch: epoch + 1,
            loss: loss / steps.max(1) as f64,
            events: seen,
            seconds,
            events_per_s: seen as f64 / seconds.max(1e-9),
        };
        tracing::info!(
            epoch = stats.epoch,
            loss = stats.loss,
            events_per_s = stats.events_per_s,
            "epoch done"
        );
        epochs.push(stats);
    }
    Ok(epochs)
}

/// Users per user-vector write while publishing (bounds the memory it takes).
const USER_CHUNK: usize = 10_000;

/// Runs `f` to completion from this (blocking, non-async) thread: on the caller's runtime
/// when there is one, else on a small one made for it.
fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => Ok(h.block_on(f)),
        Err(_) => Ok(tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(f)),
    }
}

/// Writes generation `g` completely before anything points at it: the checkpoint (with
/// the archive cutoff as its offsets), a base index snapshot built from scratch
/// (quantizers trained on the new vectors), and every user's vector under the new
/// generation's keys when a user store is given. Returns the users written.
fn publish(
    opts: &RetrainOptions,
    users: Option<&dyn UserVectorSink>,
    model: &Model,
    g: u64,
    cutoff: &BTreeMap<i32, i64>,
) -> anyhow::Result<usize> {
    let dir = generation_dir(&opts.models, g);
    let meta = CheckpointMeta {
        generation: g,
        offsets: cutoff
            .iter()
            .map(|(p, o)| (format!("{}/{p}", opts.topic), *o))
            .collect(),
        created_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        ..CheckpointMeta::default()
    };
    checkpoint::write(&dir, model, &meta, 1)?;
    let ids = model.item_ids().clone();
    let rows: Vec<u32> = (0..ids.len() as u32)
        .filter(|&r| ids.id(r).is_some())
        .collect();
    if !rows.is_empty() {
        let vectors = model.item_vectors(&rows)?;
        let keys: Vec<u64> = rows.iter().map(|&r| u64::from(r)).collect();
        let index = ItemIndex::build(model.dim(), &opts.index, &keys, &vectors)?;
        snapshot::write(
            &generations::snapshot_dir(&opts.models, g),
            g,
            &ids,
            &index,
            &BTreeMap::new(),
            1,
        )?;
    }
    let Some(sink) = users else {
        return Ok(0);
    };
    let user_ids = model.user_ids();
    let live: Vec<u32> = (0..user_ids.len() as u32)
        .filter(|&r| user_ids.id(r).is_some())
        .collect();
    let d = model.dim();
    for rows in live.chunks(USER_CHUNK) {
        let vectors = model.user_vectors(rows)?;
        let updates: Vec<UserUpdate> = rows
            .iter()
            .zip(vectors.chunks_exact(d))
            .filter_map(|(&r, v)| {
                Some(UserUpdate {
                    user_id: user_ids.id(r)?.to_owned(),
                    vector: v.to_vec(),
                    new_items: Vec::new(),
                })
            })
            .collect();
        block_on(sink.publish(g, &updates))?
            .with_context(|| format!("writing the user vectors of generation {g}"))?;
    }
    Ok(live.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use recsys_engine::store::MemoryUserStore;
    use recsys_engine::synth::SynthConfig;
    use recsys_trainer::sink::MemoryUserVectorSink;
    use std::sync::Arc;

    fn options(
        from: &Path,
        out: PathBuf,
        models: &Path,
        epochs: usize,
        force: bool,
    ) -> RetrainOptions {
        let mut model = ModelConfig::default();
        model.mf.dim = 16;
        RetrainOptions {
            from: from.to_owned(),
            days: 3,
            out,
            models: models.to_owned(),
            epochs,
            batch: 256,
            margin: 0.002,
            force,
            read_rows: 4096,
            max_test_users: 10_000,
            seed: 3,
            model,
            index: IndexConfig::default(),
            backend: Backend::Cpu,
            topic: "events".into(),
            progress: false,
        }
    }

    #[test]
    fn retrain_reports_gates_publishes_and_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let data = SynthConfig {
            users: 300,
            items: 150,
            events: 12_000,
            clusters: 5,
            days: 3,
            seed: 4,
            ..SynthConfig::default()
        }
        .generate()
        .unwrap();
        let archive_dir = dir.path().join("archive");
        archive::write_events(&archive_dir, &data.train).unwrap();
        let models = dir.path().join("models");

        // First retrain: no current generation, so it is published as generation 1.
        let out1 = dir.path().join("r1");
        let store = Arc::new(MemoryUserStore::new());
        let sink = MemoryUserVectorSink {
            store: store.clone(),
            history_len: 10,
        };
        let r = run(
            &options(&archive_dir, out1.clone(), &models, 3, false),
            Some(&sink),
        )
        .unwrap();
        assert!(r.published, "{}", r.decision);
        assert_eq!(r.new_generation, 1);
        // Every user's vector is under the new generation's keys, as the model has it.
        assert_eq!(r.users_written, r.users);
        for f in ["report.json", "report.md", "loss.png", "metrics.png"] {
            assert!(out1.join(f).metadata().unwrap().len() > 0, "{f}");
        }
        for x in [
            r.new.hr_at_10,
            r.new.ndcg_at_10,
            r.popularity.ndcg_at_10,
            r.events_per_s,
        ] {
            assert!(x.is_finite(), "{r:?}");
        }
        assert!(r.new.ndcg_at_10 > r.popularity.ndcg_at_10, "{r:?}");
        assert!(r.peak_rss_bytes > 0);
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(out1.join("report.json")).unwrap()).unwrap();
        for key in [
            "published",
            "new",
            "popularity",
            "events",
            "events_per_s",
            "peak_rss_bytes",
        ] {
            assert!(!json[key].is_null(), "{key}");
        }
        assert_eq!(
            generations::current(&models).unwrap().unwrap().generation,
            1
        );
        let md = fs::read_to_string(out1.join("report.md")).unwrap();
        assert!(md.contains("Published as generation 1"), "{md}");
        // The checkpoint carries the archive's cutoff for the online trainer.
        let (_, meta, _) = checkpoint::load_latest(
            &generation_dir(&models, 1),
            &recsys_engine::device::cpu_autodiff_device(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            meta.offsets.get("events/0"),
            Some(&(data.train.len() as i64))
        );
        let published = checkpoint::load_latest(
            &generation_dir(&models, 1),
            &recsys_engine::device::cpu_autodiff_device(),
        )
        .unwrap()
        .unwrap()
        .0;
        let row = published.user_ids().get(&data.train[0].user_id).unwrap();
        assert_eq!(
            store.get(1, &data.train[0].user_id).vector,
            Some(published.user_vectors(&[row]).unwrap())
        );
        assert_eq!(store.get(2, &data.train[0].user_id).vector, None);

        // A deliberately worse model (0 epochs) is refused and generation 1 stays.
        let r = run(
            &options(&archive_dir, dir.path().join("r2"), &models, 0, false),
            None,
        )
        .unwrap();
        assert!(!r.published, "{}", r.decision);
        assert!(r.current.unwrap().ndcg_at_10 > r.new.ndcg_at_10);
        assert_eq!(
            generations::current(&models).unwrap().unwrap().generation,
            1
        );
        let md = fs::read_to_string(dir.path().join("r2/report.md")).unwrap();
        assert!(md.contains("Not published"), "{md}");

        // --force publishes it anyway; rollback restores generation 1.
        let r = run(
            &options(&archive_dir, dir.path().join("r3"), &models, 0, true),
            None,
        )
        .unwrap();
        assert!(r.published && r.forced, "{}", r.decision);
        assert_eq!(
            generations::current(&models).unwrap().unwrap().generation,
            2
        );
        let back = rollback(&models).unwrap();
        assert_eq!(back.generation, 1);
        assert_eq!(
            generations::current(&models).unwrap().unwrap().generation,
            1
        );
    }
}
