//! The streaming evaluation from start to end: the base trained with the batch recipe,
//! the standard arms and the sync-interval curve set up, the replay, the report.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};
use recsys_engine::device::{Backend, autodiff_device};
use recsys_engine::model::{Model, ModelConfig};
use recsys_engine::train::{EpochPlan, InMemory, default_passes, fit_batch};
use recsys_index::ids::IdMap;
use recsys_schemas::Event;
use serde::Serialize;

use super::arms::{Evolving, OnlineLearner, everything};
use super::driver::{Arm, Setup, Sync, replay};
use super::plot;
use super::served::Served;
use super::tally::ArmReport;
use crate::{Result, TrainerConfig, TrainerError};

/// Settings of one streaming evaluation.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Share of the events (the oldest) that trains the base.
    pub base_fraction: f64,
    /// Chronological shards of the stream the figures are also given for.
    pub shards: usize,
    /// At most this many stream events are scored (a seeded sample); 0: all.
    pub max_test_events: usize,
    /// How often the online arm's published vectors are refreshed, in event time (ms);
    /// `None`: after every batch.
    pub sync_every_ms: Option<i64>,
    /// Also replay the online arm at the sync intervals of the curve (1 min, 1 h, 1 day).
    pub sync_curve: bool,
    /// The online trainer's settings (batch size, history length, popularity, admission).
    pub trainer: TrainerConfig,
    /// The model and its settings, as `recsys train` runs it.
    pub model: ModelConfig,
    /// Passes of the base's batch recipe; `None`: the model's default.
    pub base_epochs: Option<usize>,
    pub base_batch: usize,
    pub backend: Backend,
    pub seed: u64,
    /// The online arm's table learning rate, if not the model's.
    pub online_learning_rate: Option<f32>,
    /// Where to draw NDCG@10 per shard (PNG); `None`: no plot.
    pub plot: Option<PathBuf>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            base_fraction: 0.8,
            shards: 10,
            max_test_events: 0,
            sync_every_ms: None,
            sync_curve: true,
            trainer: TrainerConfig::default(),
            model: ModelConfig::default(),
            base_epochs: None,
            base_batch: 1024,
            backend: Backend::Cpu,
            seed: 7,
            online_learning_rate: None,
            plot: None,
        }
    }
}

/// One point of the sync-interval curve: the online arm's figures when serving sees
/// its updates only that often.
#[derive(Debug, Clone, Serialize)]
pub struct SyncPoint {
    pub sync: String,
    /// `None`: after every batch; for `frozen`, never.
    pub sync_every_ms: Option<i64>,
    pub hr_at_10: f64,
    pub ndcg_at_10: f64,
    pub mrr: f64,
}

/// The figures of a streaming evaluation; `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    pub frozen: ArmReport,
    pub online: ArmReport,
    pub online_scratch: ArmReport,
    pub popularity: ArmReport,
    pub sync_curve: Vec<SyncPoint>,
    pub base_events: usize,
    pub stream_events: usize,
    /// Stream events scored, and those not scored because their item was already among
    /// the user's recent items (learnt from all the same).
    pub scored_events: usize,
    pub repeats_not_scored: usize,
    pub users: usize,
    pub items: usize,
    pub base_train_s: f64,
    /// Stream events per second through the online trainer's per-batch function
    /// (scoring excluded).
    pub replay_events_per_s: f64,
    pub plot: Option<String>,
}

/// The curve's intervals beside every batch: a minute, an hour, a day.
const CURVE: [(&str, i64); 3] = [("1 min", 60_000), ("1 h", 3_600_000), ("1 day", 86_400_000)];

/// Runs the streaming evaluation on `events`, which must be in time order.
pub fn run(events: &[Event], opts: &ReplayOptions) -> Result<StreamReport> {
    opts.model.validate()?;
    if !(opts.base_fraction > 0.0 && opts.base_fraction < 1.0) {
        return Err(TrainerError::Config(
            "--base-fraction must be between 0 and 1".into(),
        ));
    }
    if events.windows(2).any(|w| w[0].ts > w[1].ts) {
        return Err(TrainerError::Data(
            "the events are not in time order".into(),
        ));
    }
    let cut = (events.len() as f64 * opts.base_fraction).round() as usize;
    let (base, stream) = events.split_at(cut.min(events.len()));
    if base.is_empty() || stream.is_empty() {
        return Err(TrainerError::Data(format!(
            "{} events: too few to split into a base and a stream",
            events.len()
        )));
    }
    // The trainer's own prequential scoring is the replay's: switched off inside it.
    let trainer = TrainerConfig {
        prequential_sample: 0,
        ..opts.trainer.clone()
    };

    let started = std::time::Instant::now();
    let mut model = Model::new(&opts.model, autodiff_device(opts.backend)?)?;
    let plan = EpochPlan {
        epochs: opts.base_epochs.unwrap_or_else(|| default_passes(&model)),
        batch: opts.base_batch,
        shuffle: true,
    };
    let mut rng = StdRng::seed_from_u64(opts.seed);
    fit_batch(&mut model, &mut InMemory(base), &plan, &mut rng, &mut ())?;
    set_histories(&mut model, base);
    let base_train_s = started.elapsed().as_secs_f64();

    let mut catalog = IdMap::new();
    let dim = model.dim();
    let (base_users, base_items) = everything(&model)?;
    let published = |catalog: &mut IdMap| {
        let mut s = Served::new(dim);
        s.publish_users(base_users.clone());
        s.publish_items(base_items.clone(), catalog);
        s
    };
    let frozen = published(&mut catalog);
    let online_start = frozen.clone();
    let mut arms = vec![
        Arm::new("frozen", frozen, None, Sync::Never),
        Arm::new(
            "online",
            online_start.clone(),
            Some(0),
            opts.sync_every_ms.map_or(Sync::EveryBatch, Sync::EveryMs),
        ),
        Arm::new(
            "online_scratch",
            Served::new(dim),
            Some(1),
            Sync::EveryBatch,
        ),
        Arm::new("popularity", Served::new(dim), None, Sync::Never),
    ];
    if opts.sync_curve {
        if opts.sync_every_ms.is_some() {
            arms.push(Arm::new(
                "every batch",
                online_start.clone(),
                Some(0),
                Sync::EveryBatch,
            ));
        }
        for (name, ms) in CURVE {
            arms.push(Arm::new(
                name,
                online_start.clone(),
                Some(0),
                Sync::EveryMs(ms),
            ));
        }
    }
    if let Some(lr) = opts.online_learning_rate {
        model.set_learning_rate(lr);
    }
    let mut online = OnlineLearner::new(&trainer, model);
    online.count_popularity(base);
    let scratch = OnlineLearner::new(
        &trainer,
        Model::new(&opts.model, autodiff_device(opts.backend)?)?,
    );
    let mut learners: Vec<Box<dyn Evolving>> = vec![Box::new(online), Box::new(scratch)];

    let scored = (opts.max_test_events > 0 && opts.max_test_events < stream.len()).then(|| {
        let mut positions: Vec<usize> = (0..stream.len()).collect();
        positions.shuffle(&mut StdRng::seed_from_u64(opts.seed ^ 0x5EED));
        positions.truncate(opts.max_test_events);
        positions.into_iter().collect::<HashSet<usize>>()
    });
    let setup = Setup {
        batch: trainer.batch_size,
        batch_span_ms: trainer.batch_timeout_ms as i64,
        history_len: trainer.history_len,
        popularity_half_life_ms: trainer.popularity_half_life_s * 1000.0,
        shards: opts.shards.max(1),
        scored,
    };
    let (mut reports, counts) =
        replay(&setup, base, stream, &mut arms, &mut learners, &mut catalog)?;
    let replay_events_per_s = stream.len() as f64 / learners[0].train_seconds().max(1e-9);
    let mut take = |name: &str| -> ArmReport {
        reports
            .iter()
            .position(|r| r.0 == name)
            .map(|k| reports.swap_remove(k).1)
            .unwrap_or_default()
    };
    let frozen = take("frozen");
    let online = take("online");
    let online_scratch = take("online_scratch");
    let popularity = take("popularity");
    let point = |sync: &str, ms: Option<i64>, r: &ArmReport| SyncPoint {
        sync: sync.to_owned(),
        sync_every_ms: ms,
        hr_at_10: r.hr_at_10,
        ndcg_at_10: r.ndcg_at_10,
        mrr: r.mrr,
    };
    let mut sync_curve = Vec::new();
    if opts.sync_curve {
        let immediate = match opts.sync_every_ms {
            None => online.clone(),
            Some(_) => take("every batch"),
        };
        sync_curve.push(point("every batch", None, &immediate));
        for (name, ms) in CURVE {
            sync_curve.push(point(name, Some(ms), &take(name)));
        }
        sync_curve.push(point("frozen", None, &frozen));
    }
    let mut report = StreamReport {
        frozen,
        online,
        online_scratch,
        popularity,
        sync_curve,
        base_events: base.len(),
        stream_events: stream.len(),
        scored_events: counts.scored,
        repeats_not_scored: counts.repeats,
        users: counts.users,
        items: counts.items,
        base_train_s,
        replay_events_per_s,
        plot: None,
    };
    if let Some(path) = &opts.plot {
        plot::shards(
            path,
            [
                &report.frozen,
                &report.online,
                &report.online_scratch,
                &report.popularity,
            ],
        )?;
        report.plot = Some(path.display().to_string());
    }
    Ok(report)
}

/// The two-tower user tower reads each user's latest items: after shuffled training,
/// they are set from the base in time order, as they would be online.
fn set_histories(model: &mut Model, base: &[Event]) {
    let Model::TwoTower(m) = model else { return };
    let mut by_user: HashMap<&str, Vec<String>> = HashMap::new();
    for e in base {
        by_user
            .entry(&e.user_id)
            .or_default()
            .push(e.item_id.clone());
    }
    for (user, items) in by_user {
        m.set_history(user, &items);
    }
}
