//! One retrain from start to end: window and cutoff, catalog and test set, training,
//! evaluation of new, current and popularity, the gate, publishing, the report.

use std::fs;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rand::{SeedableRng, rngs::StdRng};
use recsys_engine::checkpoint;
use recsys_engine::device::autodiff_device;
use recsys_engine::eval::{self, PopularityRanker};
use recsys_engine::model::Model;
use recsys_engine::train::{EpochPlan, Progress, default_passes, fit_batch, solves_whole_history};
use recsys_index::generations::{self, Current, generation_dir};

use super::gate::decide;
use super::publish::publish;
use super::source::ArchiveDays;
use super::split;
use super::types::{RetrainOptions, RetrainReport};
use super::{markdown, plots};
use crate::archive;
use crate::sink::UserVectorSink;
use crate::{Result, TrainerError};

/// An indicatif progress bar as training progress: epoch, events, loss.
struct Bar(ProgressBar);

impl Progress for Bar {
    fn epoch(&mut self, epoch: usize, epochs: usize) {
        self.0.set_prefix(format!("epoch {epoch}/{epochs}"));
    }

    fn step(&mut self, events: usize) {
        self.0.inc(events as u64);
    }

    fn batch_done(&mut self, mean_loss: f64) {
        self.0.set_message(format!("loss {mean_loss:.4}"));
    }
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
pub fn run(opts: &RetrainOptions, users: Option<&dyn UserVectorSink>) -> Result<RetrainReport> {
    let started = Instant::now();
    opts.model.validate()?;
    if opts.days < 2 {
        return Err(TrainerError::Config(
            "--days must be at least 2: the last day of the window is the test day".into(),
        ));
    }
    let all_days = archive::days(&opts.from)?;
    if all_days.len() < 2 {
        return Err(TrainerError::Data(format!(
            "{}: the archive holds {} day(s); a retrain needs at least 2",
            opts.from.display(),
            all_days.len()
        )));
    }
    let window = &all_days[all_days.len().saturating_sub(opts.days)..];
    let (train_days, test_day) = (
        window[..window.len() - 1].to_vec(),
        window[window.len() - 1].clone(),
    );
    // The cutoff: everything committed to the archive when the retrain started.
    let cutoff = archive::committed(&opts.from)?;
    fs::create_dir_all(&opts.out).map_err(TrainerError::io(&opts.out))?;

    let (catalog, events) = split::catalog(&opts.from, &train_days, &cutoff, opts.read_rows)?;
    let (test, eligible_test_users) = split::test_pairs(
        &opts.from,
        &test_day,
        &cutoff,
        opts.read_rows,
        &catalog,
        opts.max_test_users,
        opts.seed,
    )?;

    // Training: E epochs streaming the files; each read batch is shuffled.
    let mut model = Model::new(&opts.model, autodiff_device(opts.backend)?)?;
    let passes = opts.epochs.unwrap_or_else(|| default_passes(&model));
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let bar = if opts.progress {
        ProgressBar::new(events * passes as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {human_pos}/{human_len} {per_sec} ETA {eta} {msg}",
        )
        .map_err(|e| TrainerError::Task(format!("progress bar: {e}")))?
        .progress_chars("=> "),
    );
    let plan = EpochPlan {
        epochs: passes,
        batch: opts.batch,
        shuffle: true,
    };
    let mut source = ArchiveDays {
        dir: &opts.from,
        days: &train_days,
        cutoff: &cutoff,
        read_rows: opts.read_rows,
    };
    let train_started = Instant::now();
    let mut progress = Bar(bar);
    let epochs = fit_batch(&mut model, &mut source, &plan, &mut rng, &mut progress)?;
    progress.0.finish_and_clear();
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
    let verdict = decide(
        &new,
        current_metrics.as_ref(),
        cur.map(|c| c.generation),
        opts.margin,
        opts.force,
    );
    let mut users_written = 0;
    let mut refit_events = 0;
    if verdict.published {
        // The gate has judged the recipe; the published model also learns the test day,
        // so it has seen every archived event below the cutoff its offsets name and the
        // online trainer replays only what came after.
        let t = Instant::now();
        // Epochs of the step add the test day to what the model knows; ALS sweeps solve
        // each row against all of its pairs, so they go over every day again, starting
        // from the rows they reached.
        let all_days: Vec<_> = train_days.iter().chain([&test_day]).cloned().collect();
        let mut test_day_source = ArchiveDays {
            dir: &opts.from,
            days: if solves_whole_history(&model) {
                &all_days
            } else {
                std::slice::from_ref(&test_day)
            },
            cutoff: &cutoff,
            read_rows: opts.read_rows,
        };
        let refit = fit_batch(&mut model, &mut test_day_source, &plan, &mut rng, &mut ())?;
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
        published: verdict.published,
        forced: opts.force && !verdict.pass,
        decision: verdict.decision,
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
    report.plots = plots::plots(&opts.out, &report)?;
    report.total_seconds = started.elapsed().as_secs_f64();
    report.peak_rss_bytes = peak_rss_bytes();
    let json = opts.out.join("report.json");
    fs::write(&json, serde_json::to_vec_pretty(&report)?).map_err(TrainerError::io(&json))?;
    let md = opts.out.join("report.md");
    fs::write(&md, markdown::markdown(&report, opts)).map_err(TrainerError::io(&md))?;
    Ok(report)
}
