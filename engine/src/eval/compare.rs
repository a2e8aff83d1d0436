//! `recsys eval`: the offline protocol on a file of interactions or on the synthetic
//! generator, for MF, two-tower and popularity side by side (and, on synthetic data, the
//! generator's oracle).

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

use rand::{SeedableRng, rngs::StdRng};
use recsys_schemas::Event;
use serde::Serialize;

use super::oracle::OracleRanker;
use super::protocol::{
    Catalog, Metrics, PopularityRanker, Ranker, Split, evaluate, evaluate_model, leave_last_out,
};
use crate::data::{Format, read};
use crate::device::cpu_autodiff_device;
use crate::mf::{MfConfig, MfModel};
use crate::model::Model;
use crate::synth::SynthConfig;
use crate::train::{EpochPlan, InMemory, default_passes, fit_batch, train_epochs};
use crate::two_tower::{TwoTowerConfig, TwoTowerModel};
use crate::{EngineError, Result};

/// Models `recsys eval` can train and score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelName {
    Mf,
    TwoTower,
    Popularity,
    /// MF trained the way the online trainer learns: one pass over the training events
    /// in time order, in micro-batches, with the same step and settings.
    MfOnline,
    /// The two-tower model trained the online way.
    TwoTowerOnline,
}

impl ModelName {
    /// Every model's name, as [`FromStr`] reads it.
    pub const NAMES: [&str; 5] = [
        "mf",
        "two-tower",
        "popularity",
        "mf-online",
        "two-tower-online",
    ];
}

impl FromStr for ModelName {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mf" => Ok(Self::Mf),
            "two-tower" => Ok(Self::TwoTower),
            "popularity" => Ok(Self::Popularity),
            "mf-online" => Ok(Self::MfOnline),
            "two-tower-online" => Ok(Self::TwoTowerOnline),
            other => Err(EngineError::Data(format!(
                "model {other:?}: expected one of {}",
                Self::NAMES.join(", ")
            ))),
        }
    }
}

/// Hyper-parameters and inputs of one evaluation.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub format: Format,
    pub path: Option<PathBuf>,
    pub train: Option<PathBuf>,
    pub test: Option<PathBuf>,
    /// Generate the data instead of reading it (and report the oracle).
    pub synthetic: Option<SynthConfig>,
    pub models: Vec<ModelName>,
    /// The models trained: the configuration's `[model.mf]` and `[model.two_tower]`, so
    /// that the offline figures are those of the recipe `retrain` and `eval --stream` use.
    pub mf: MfConfig,
    pub two_tower: TwoTowerConfig,
    /// Passes of the batch recipe; `None`: each model's default
    /// ([`crate::train::default_passes`]).
    pub epochs: Option<usize>,
    pub batch: usize,
    pub seed: u64,
    /// Same-time events in file order (false) or shuffled with `seed` (true) before the
    /// split: which of them is held out is a choice, so conclusions should hold for both.
    pub shuffle_ties: bool,
    /// Also write the split there (`train.tsv`, `test.tsv`), for peers such as
    /// `benches/implicit_reference.py`.
    pub write_split: Option<PathBuf>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            format: Format::Jsonl,
            path: None,
            train: None,
            test: None,
            synthetic: None,
            models: vec![ModelName::Mf, ModelName::TwoTower, ModelName::Popularity],
            mf: MfConfig::default(),
            two_tower: TwoTowerConfig::default(),
            epochs: None,
            batch: 1024,
            seed: 7,
            shuffle_ties: false,
            write_split: None,
        }
    }
}

/// Metrics of one model plus its training time.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ModelReport {
    #[serde(flatten)]
    pub metrics: Metrics,
    pub train_s: f64,
}

/// The evaluation's result, keyed by model name.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mf: Option<ModelReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub two_tower: Option<ModelReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub popularity: Option<ModelReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mf_online: Option<ModelReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub two_tower_online: Option<ModelReport>,
    /// Synthetic data only: the generator's true preferences.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oracle: Option<ModelReport>,
    pub train_events: usize,
    pub test_users: usize,
    pub users: usize,
    pub items: usize,
}

/// How a model sees the training events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Regime {
    /// `epochs` shuffled passes: the nightly retrain's way.
    Epochs,
    /// One pass in time order (file order among equal timestamps): the online
    /// trainer's way.
    Online,
}

/// Trains `model` on `train` the way `regime` says, in steps of `o.batch`.
fn fit(o: &EvalOptions, model: &mut Model, train: &[Event], regime: Regime) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(o.seed);
    let (events, plan) = match regime {
        Regime::Epochs => (
            std::borrow::Cow::Borrowed(train),
            EpochPlan {
                epochs: o.epochs.unwrap_or_else(|| default_passes(model)),
                batch: o.batch,
                shuffle: true,
            },
        ),
        Regime::Online => {
            let mut e = train.to_vec();
            e.sort_by_key(|e| e.ts);
            (
                std::borrow::Cow::Owned(e),
                EpochPlan {
                    epochs: 1,
                    batch: o.batch,
                    shuffle: false,
                },
            )
        }
    };
    let source = &mut InMemory(&events);
    match regime {
        Regime::Epochs => fit_batch(model, source, &plan, &mut rng, &mut ())?,
        Regime::Online => train_epochs(model, source, &plan, &mut rng, &mut ())?,
    };
    Ok(())
}

fn train_mf(o: &EvalOptions, train: &[Event], regime: Regime) -> Result<Model> {
    let cfg = o.mf.clone();
    let mut m = Model::from(MfModel::new(cfg, cpu_autodiff_device())?);
    fit(o, &mut m, train, regime)?;
    Ok(m)
}

fn train_two_tower(o: &EvalOptions, train: &[Event], regime: Regime) -> Result<Model> {
    let cfg = o.two_tower.clone();
    let mut model = Model::from(TwoTowerModel::new(cfg, cpu_autodiff_device())?);
    fit(o, &mut model, train, regime)?;
    let Model::TwoTower(m) = &mut model else {
        unreachable!("a two-tower model was made")
    };
    // Serve-time histories: each user's latest items in time order, as online.
    let mut by_user: HashMap<&str, Vec<(i64, usize, &str)>> = HashMap::new();
    for (k, e) in train.iter().enumerate() {
        by_user
            .entry(&e.user_id)
            .or_default()
            .push((e.ts, k, &e.item_id));
    }
    for (user, mut items) in by_user {
        items.sort_unstable();
        let ids: Vec<String> = items.iter().map(|x| x.2.to_owned()).collect();
        m.set_history(user, &ids);
    }
    Ok(model)
}

fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, t.elapsed().as_secs_f64()))
}

/// Runs the evaluation.
pub fn run(o: &EvalOptions) -> Result<EvalReport> {
    let mut oracle_data = None;
    let split = if let Some(s) = &o.synthetic {
        let data = s
            .generate()
            .map_err(|e| EngineError::Data(format!("synthetic data: {e}")))?;
        let split = leave_last_out(data.train.clone());
        oracle_data = Some(data);
        split
    } else if let (Some(train), Some(test)) = (&o.train, &o.test) {
        let test = read(o.format, test)?
            .into_iter()
            .map(|e| (e.user_id, e.item_id))
            .collect();
        Split {
            train: read(o.format, train)?,
            test,
        }
    } else if let Some(path) = &o.path {
        let mut events = read(o.format, path)?;
        if o.shuffle_ties {
            use rand::seq::SliceRandom;
            events.shuffle(&mut StdRng::seed_from_u64(o.seed ^ 0x71E5));
        }
        leave_last_out(events)
    } else {
        return Err(EngineError::Data(
            "give a data file (--format F PATH), --train and --test, or --synthetic".into(),
        ));
    };
    if split.train.is_empty() || split.test.is_empty() {
        return Err(EngineError::Data(format!(
            "nothing to evaluate: {} training events and {} test users (leave-last-out needs users with at least two events)",
            split.train.len(),
            split.test.len()
        )));
    }
    if let Some(dir) = &o.write_split {
        write_split(dir, &split)?;
    }
    let catalog = Catalog::new(&split.train);
    let mut report = EvalReport {
        mf: None,
        two_tower: None,
        popularity: None,
        mf_online: None,
        two_tower_online: None,
        oracle: None,
        train_events: split.train.len(),
        test_users: split.test.len(),
        users: catalog.seen.len(),
        items: catalog.len(),
    };
    let score = |r: &dyn Ranker, train_s: f64| ModelReport {
        metrics: evaluate(&catalog, &split.test, r),
        train_s,
    };
    for model in &o.models {
        match model {
            ModelName::Popularity => {
                report.popularity = Some(score(&PopularityRanker(&catalog.counts), 0.0));
            }
            kind => {
                let regime = match kind {
                    ModelName::Mf | ModelName::TwoTower => Regime::Epochs,
                    _ => Regime::Online,
                };
                let (m, secs) = match kind {
                    ModelName::Mf | ModelName::MfOnline => {
                        timed(|| train_mf(o, &split.train, regime))?
                    }
                    _ => timed(|| train_two_tower(o, &split.train, regime))?,
                };
                let slot = match kind {
                    ModelName::Mf => &mut report.mf,
                    ModelName::MfOnline => &mut report.mf_online,
                    ModelName::TwoTower => &mut report.two_tower,
                    _ => &mut report.two_tower_online,
                };
                *slot = Some(ModelReport {
                    metrics: evaluate_model(&m, &catalog, &split.test)?,
                    train_s: secs,
                });
            }
        }
    }
    if let Some(data) = &oracle_data {
        report.oracle = Some(score(&OracleRanker::new(data, &catalog), 0.0));
    }
    Ok(report)
}

/// `train.tsv` (user, item, weight, ts) and `test.tsv` (user, item) in `dir`.
fn write_split(dir: &std::path::Path, split: &Split) -> Result<()> {
    use std::fmt::Write as _;
    let bad = |e: std::io::Error| EngineError::Data(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(bad)?;
    let mut train = String::new();
    for e in &split.train {
        let _ = writeln!(
            train,
            "{}\t{}\t{}\t{}",
            e.user_id, e.item_id, e.weight, e.ts
        );
    }
    let mut test = String::new();
    for (u, i) in &split.test {
        let _ = writeln!(test, "{u}\t{i}");
    }
    std::fs::write(dir.join("train.tsv"), train).map_err(bad)?;
    std::fs::write(dir.join("test.tsv"), test).map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::write_test_file as write;
    use std::path::Path;

    /// Two groups of users, each liking its own 20 items; a few items of the other group
    /// are globally popular. Each user's last item (in time) is held out.
    fn planted(dir: &Path) -> PathBuf {
        let mut text = String::new();
        let mut state = 7u64;
        let mut next = |n: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % n
        };
        for u in 0..80u64 {
            let group = u % 2;
            let mut items: Vec<u64> = Vec::new();
            while items.len() < 12 {
                let i = group * 20 + next(20);
                if !items.contains(&i) {
                    items.push(i);
                }
            }
            // Everyone also saw the three blockbusters of group 0.
            for b in [0, 1, 2] {
                if !items.contains(&b) {
                    items.insert(0, b);
                }
            }
            for (t, i) in items.iter().enumerate() {
                text.push_str(&format!("{u}\t{i}\t4\t{}\n", 1_000 + t));
            }
        }
        write(dir, "u.data", &text)
    }

    #[test]
    fn models_beat_popularity_on_planted_groups_with_finite_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let path = planted(dir.path());
        let opts = EvalOptions {
            format: Format::Movielens,
            path: Some(path),
            mf: MfConfig {
                dim: 16,
                negatives: 20,
                ..MfConfig::default()
            },
            two_tower: TwoTowerConfig {
                dim: 16,
                negatives: 20,
                ..TwoTowerConfig::default()
            },
            epochs: Some(30),
            batch: 128,
            ..EvalOptions::default()
        };
        let r = run(&opts).unwrap();
        assert_eq!(r.test_users, 80);
        let pop = r.popularity.unwrap().metrics;
        for (name, m) in [
            ("mf", r.mf.unwrap().metrics),
            ("two_tower", r.two_tower.unwrap().metrics),
        ] {
            for x in [m.hr_at_10, m.ndcg_at_10, m.mrr, m.coverage] {
                assert!(x.is_finite() && (0.0..=1.0).contains(&x), "{name}: {m:?}");
            }
            assert!(
                m.ndcg_at_10 > pop.ndcg_at_10 + 0.1,
                "{name} NDCG@10 {:.3} vs popularity {:.3}",
                m.ndcg_at_10,
                pop.ndcg_at_10
            );
        }
        let json = serde_json::to_value(&r).unwrap();
        for key in ["mf", "two_tower", "popularity"] {
            for field in ["hr_at_10", "ndcg_at_10", "mrr", "coverage", "train_s"] {
                assert!(json[key][field].is_number(), "{key}.{field} in {json}");
            }
        }
    }

    #[test]
    fn explicit_train_and_test_files_are_not_split() {
        let dir = tempfile::tempdir().unwrap();
        let train = write(
            dir.path(),
            "train.jsonl",
            &(0..30)
                .map(|k| {
                    format!(
                        "{{\"user_id\":\"u{}\",\"item_id\":\"i{}\"}}\n",
                        k % 5,
                        k % 7
                    )
                })
                .collect::<String>(),
        );
        let test = write(
            dir.path(),
            "test.jsonl",
            "{\"user_id\":\"u1\",\"item_id\":\"i3\"}\n{\"user_id\":\"nobody\",\"item_id\":\"i3\"}\n",
        );
        let r = run(&EvalOptions {
            train: Some(train),
            test: Some(test),
            models: vec![ModelName::Popularity, ModelName::Mf, ModelName::MfOnline],
            epochs: Some(1),
            mf: MfConfig {
                dim: 8,
                ..MfConfig::default()
            },
            ..EvalOptions::default()
        })
        .unwrap();
        assert_eq!((r.train_events, r.test_users), (30, 2));
        // The online way is reported under its own key.
        let json = serde_json::to_value(&r).unwrap();
        assert!(json["mf_online"]["ndcg_at_10"].is_number(), "{json}");
        assert!(json.get("two_tower_online").is_none());
        // A test user the model never saw is scored by popularity, a miss for MF.
        assert_eq!(r.popularity.unwrap().metrics.users, 2);
    }
}
