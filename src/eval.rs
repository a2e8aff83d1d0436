//! `recsys eval`: the offline protocol of DESIGN §5 on a file of interactions (MovieLens
//! formats, JSON lines or Parquet) or on the synthetic generator, for MF, two-tower and
//! popularity side by side.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};
use recsys_engine::device::cpu_autodiff_device;
use recsys_engine::eval::{self, Catalog, Metrics, PopularityRanker, Ranker};
use recsys_engine::loss::LossKind;
use recsys_engine::mf::{MfConfig, MfModel};
use recsys_engine::model::Model;
use recsys_engine::synth::SynthConfig;
use recsys_engine::two_tower::{TwoTowerConfig, TwoTowerModel};
use recsys_schemas::Event;
use serde::Serialize;

/// Input file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `u.data` (tab-separated), `ratings.dat` (`::`) or `ratings.csv` (with header):
    /// user, item, rating, unix seconds. Every rating counts as one interaction.
    Movielens,
    /// One event JSON object per line, as produced to the `events` topic.
    Jsonl,
    /// Parquet in the archive's Arrow schema (`user_id`, `item_id`, `ts`, ...).
    Parquet,
}

/// Models `recsys eval` can train and score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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
    pub dim: usize,
    pub epochs: usize,
    pub batch: usize,
    pub learning_rate: f32,
    /// MF softmax temperature; the two-tower model's is `tower_temperature`.
    pub temperature: f32,
    pub tower_temperature: f32,
    /// Uniform negatives of the two-tower model (MF's are `negatives`).
    pub tower_negatives: usize,
    pub l2: f32,
    pub loss: LossKind,
    pub negatives: usize,
    pub logq: bool,
    pub seed: u64,
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
            dim: 64,
            epochs: 10,
            batch: 1024,
            learning_rate: 0.05,
            temperature: 1.0,
            tower_temperature: 0.2,
            tower_negatives: 3000,
            l2: 1e-4,
            loss: LossKind::Softmax,
            negatives: 1000,
            logq: false,
            seed: 7,
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

/// Reads interactions from `path` in `format`. Errors name the file and line.
pub fn read(format: Format, path: &Path) -> anyhow::Result<Vec<Event>> {
    match format {
        Format::Movielens => read_movielens(path),
        Format::Jsonl => read_jsonl(path),
        Format::Parquet => read_parquet(path),
    }
}

fn lines(path: &Path) -> anyhow::Result<impl Iterator<Item = (usize, std::io::Result<String>)>> {
    let f = File::open(path).with_context(|| format!("{}", path.display()))?;
    Ok(BufReader::new(f)
        .lines()
        .enumerate()
        .map(|(n, l)| (n + 1, l)))
}

fn read_movielens(path: &Path) -> anyhow::Result<Vec<Event>> {
    let mut out = Vec::new();
    for (n, line) in lines(path)? {
        let line = line.with_context(|| format!("{}:{n}", path.display()))?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = if line.contains("::") {
            line.split("::").collect()
        } else if line.contains('\t') {
            line.split('\t').collect()
        } else {
            if n == 1 && line.to_ascii_lowercase().starts_with("userid") {
                continue; // the ratings.csv header
            }
            line.split(',').collect()
        };
        if fields.len() < 4 {
            bail!(
                "{}:{n}: expected user, item, rating, timestamp; got {} fields",
                path.display(),
                fields.len()
            );
        }
        let secs: i64 = fields[3].trim().parse().with_context(|| {
            format!(
                "{}:{n}: timestamp {:?} is not an integer",
                path.display(),
                fields[3]
            )
        })?;
        let rating: f32 = fields[2].trim().parse().with_context(|| {
            format!(
                "{}:{n}: rating {:?} is not a number",
                path.display(),
                fields[2]
            )
        })?;
        if !rating.is_finite() {
            bail!("{}:{n}: rating is not finite", path.display());
        }
        let (user, item) = (fields[0].trim(), fields[1].trim());
        if user.is_empty() || item.is_empty() {
            bail!("{}:{n}: empty user or item id", path.display());
        }
        out.push(Event {
            user_id: user.to_owned(),
            item_id: item.to_owned(),
            kind: "rating".into(),
            weight: 1.0,
            ts: secs.saturating_mul(1000),
            event_id: None,
        });
    }
    Ok(out)
}

fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Event>> {
    let mut out = Vec::new();
    for (n, line) in lines(path)? {
        let line = line.with_context(|| format!("{}:{n}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let e = Event::from_json(line.as_bytes(), n as i64)
            .map_err(|e| anyhow::anyhow!("{}:{n}: {e}", path.display()))?;
        out.push(e);
    }
    Ok(out)
}

fn read_parquet(path: &Path) -> anyhow::Result<Vec<Event>> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let f = File::open(path).with_context(|| format!("{}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .with_context(|| format!("{}: not a Parquet file", path.display()))?
        .with_batch_size(65_536)
        .build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.with_context(|| format!("{}", path.display()))?;
        let events = recsys_schemas::arrow::batch_to_events(&batch)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        out.extend(events);
    }
    Ok(out)
}

fn shuffled_epochs(train: &[Event], epochs: usize, seed: u64) -> impl Iterator<Item = Vec<Event>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..epochs).map(move |_| {
        let mut e = train.to_vec();
        e.shuffle(&mut rng);
        e
    })
}

/// In time order (file order among equal timestamps), as a stream delivers them.
fn in_time_order(train: &[Event]) -> Vec<Event> {
    let mut e = train.to_vec();
    e.sort_by_key(|e| e.ts);
    e
}

/// How a model sees the training events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Regime {
    /// `epochs` shuffled passes: the nightly retrain's way.
    Epochs,
    /// One pass in time order: the online trainer's way.
    Online,
}

/// `o.epochs` passes over `train`, shuffled each time, or one pass in time order; in
/// batches of `o.batch`.
fn train_epochs(
    o: &EvalOptions,
    train: &[Event],
    regime: Regime,
    model: &str,
    step: &mut dyn FnMut(&[Event]) -> recsys_engine::Result<recsys_engine::mf::StepStats>,
) -> anyhow::Result<()> {
    let passes: Box<dyn Iterator<Item = Vec<Event>>> = match regime {
        Regime::Epochs => Box::new(shuffled_epochs(train, o.epochs, o.seed)),
        Regime::Online => Box::new(std::iter::once(in_time_order(train))),
    };
    for (epoch, events) in passes.enumerate() {
        let (mut loss, mut steps) = (0.0, 0);
        for chunk in events.chunks(o.batch) {
            let s = step(chunk)?;
            if s.loss.is_finite() {
                loss += s.loss;
                steps += 1;
            }
        }
        tracing::info!(
            model,
            epoch,
            loss = loss / steps.max(1) as f32,
            "epoch done"
        );
    }
    Ok(())
}

fn train_mf(o: &EvalOptions, train: &[Event], regime: Regime) -> anyhow::Result<MfModel> {
    let cfg = MfConfig {
        dim: o.dim,
        learning_rate: o.learning_rate,
        temperature: o.temperature,
        l2: o.l2,
        loss: o.loss,
        negatives: o.negatives,
        logq_correction: o.logq,
        seed: o.seed,
        ..MfConfig::default()
    };
    let mut m = MfModel::new(cfg, cpu_autodiff_device())?;
    train_epochs(o, train, regime, "mf", &mut |chunk| {
        m.train_events(chunk).map(|r| r.0)
    })?;
    Ok(m)
}

fn train_two_tower(
    o: &EvalOptions,
    train: &[Event],
    regime: Regime,
) -> anyhow::Result<TwoTowerModel> {
    let cfg = TwoTowerConfig {
        dim: o.dim,
        learning_rate: o.learning_rate,
        temperature: o.tower_temperature,
        l2: o.l2.min(1e-5),
        loss: o.loss,
        negatives: o.tower_negatives,
        logq_correction: o.logq,
        seed: o.seed,
        ..TwoTowerConfig::default()
    };
    let mut m = TwoTowerModel::new(cfg, cpu_autodiff_device())?;
    train_epochs(o, train, regime, "two_tower", &mut |chunk| {
        m.train_events(chunk).map(|r| r.0)
    })?;
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
    Ok(m)
}

fn timed<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(T, f64)> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, t.elapsed().as_secs_f64()))
}

/// Runs the evaluation.
pub fn run(o: &EvalOptions) -> anyhow::Result<EvalReport> {
    let mut oracle_data = None;
    let split = if let Some(s) = &o.synthetic {
        let data = s
            .generate()
            .map_err(|e| anyhow::anyhow!("synthetic data: {e}"))?;
        let split = eval::leave_last_out(data.train.clone());
        oracle_data = Some(data);
        split
    } else if let (Some(train), Some(test)) = (&o.train, &o.test) {
        let test = read(o.format, test)?
            .into_iter()
            .map(|e| (e.user_id, e.item_id))
            .collect();
        eval::Split {
            train: read(o.format, train)?,
            test,
        }
    } else if let Some(path) = &o.path {
        eval::leave_last_out(read(o.format, path)?)
    } else {
        bail!("give a data file (--format F PATH), --train and --test, or --synthetic");
    };
    if split.train.is_empty() || split.test.is_empty() {
        bail!(
            "nothing to evaluate: {} training events and {} test users (leave-last-out needs users with at least two events)",
            split.train.len(),
            split.test.len()
        );
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
        metrics: eval::evaluate(&catalog, &split.test, r),
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
                        timed(|| Ok(Model::from(train_mf(o, &split.train, regime)?)))?
                    }
                    _ => timed(|| Ok(Model::from(train_two_tower(o, &split.train, regime)?)))?,
                };
                let slot = match kind {
                    ModelName::Mf => &mut report.mf,
                    ModelName::MfOnline => &mut report.mf_online,
                    ModelName::TwoTower => &mut report.two_tower,
                    _ => &mut report.two_tower_online,
                };
                *slot = Some(ModelReport {
                    metrics: eval::evaluate_model(&m, &catalog, &split.test)?,
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

/// The synthetic generator's true preference of each user for each catalog item.
struct OracleRanker<'a> {
    data: &'a recsys_engine::synth::SynthData,
    /// Catalog row → item number in the generator.
    item_number: Vec<usize>,
}

impl<'a> OracleRanker<'a> {
    fn new(data: &'a recsys_engine::synth::SynthData, catalog: &Catalog) -> Self {
        let item_number = catalog
            .items
            .ids()
            .iter()
            .map(|id| id.trim_start_matches('i').parse().unwrap_or(usize::MAX))
            .collect();
        Self { data, item_number }
    }
}

impl Ranker for OracleRanker<'_> {
    fn scores(&self, user: &str, out: &mut [f32]) -> bool {
        let Ok(u) = user.trim_start_matches('u').parse::<usize>() else {
            return false;
        };
        if u >= self.data.user_clusters.len() {
            return false;
        }
        let truth = self.data.true_scores(u);
        for (s, &i) in out.iter_mut().zip(&self.item_number) {
            *s = truth.get(i).copied().unwrap_or(0.0) as f32;
        }
        true
    }
}

/// Prints the report as a table on stderr-friendly stdout lines.
pub fn print(report: &EvalReport) {
    println!(
        "{} training events, {} users, {} items; {} test users (leave-last-out, full ranking)",
        report.train_events, report.users, report.items, report.test_users
    );
    println!(
        "{:<16} {:>8} {:>9} {:>8} {:>9} {:>9}",
        "model", "HR@10", "NDCG@10", "MRR", "coverage", "train_s"
    );
    let rows = [
        ("mf", report.mf),
        ("two_tower", report.two_tower),
        ("popularity", report.popularity),
        ("mf_online", report.mf_online),
        ("two_tower_online", report.two_tower_online),
        ("oracle", report.oracle),
    ];
    for (name, r) in rows {
        if let Some(r) = r {
            let m = r.metrics;
            println!(
                "{name:<16} {:>8.4} {:>9.4} {:>8.4} {:>9.4} {:>9.1}",
                m.hr_at_10, m.ndcg_at_10, m.mrr, m.coverage, r.train_s
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        path
    }

    #[test]
    fn the_three_movielens_formats_read_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let u_data = write(
            dir.path(),
            "u.data",
            "196\t242\t3\t881250949\n186\t302\t3\t891717742\n",
        );
        let dat = write(
            dir.path(),
            "ratings.dat",
            "196::242::3::881250949\n186::302::3::891717742\n",
        );
        let csv = write(
            dir.path(),
            "ratings.csv",
            "userId,movieId,rating,timestamp\n196,242,3.0,881250949\n186,302,3.0,891717742\n",
        );
        let a = read(Format::Movielens, &u_data).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].user_id, "196");
        assert_eq!(a[0].item_id, "242");
        assert_eq!(a[0].ts, 881_250_949_000);
        assert_eq!(read(Format::Movielens, &dat).unwrap(), a);
        assert_eq!(read(Format::Movielens, &csv).unwrap(), a);
    }

    #[test]
    fn bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "u.data", "1\t2\t3\t4\n1\t2\t3\tsoon\n");
        let err = read(Format::Movielens, &p).unwrap_err().to_string();
        assert!(
            err.contains("u.data:2") && err.contains("timestamp"),
            "{err}"
        );
        let p = write(
            dir.path(),
            "e.jsonl",
            "{\"user_id\":\"u\",\"item_id\":\"i\"}\n{\"user_id\":\"\"}\n",
        );
        let err = read(Format::Jsonl, &p).unwrap_err().to_string();
        assert!(
            err.contains("e.jsonl:2") && err.contains("user_id"),
            "{err}"
        );
    }

    #[test]
    fn parquet_in_the_archive_schema_reads_back() {
        let events: Vec<Event> = (0..5)
            .map(|k| Event {
                user_id: format!("u{k}"),
                item_id: format!("i{}", k % 2),
                kind: "click".into(),
                weight: 1.0,
                ts: 1000 + k,
                event_id: None,
            })
            .collect();
        let batch = recsys_schemas::arrow::events_to_batch(&events).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.parquet");
        let mut w = parquet::arrow::ArrowWriter::try_new(
            File::create(&path).unwrap(),
            batch.schema(),
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        assert_eq!(read(Format::Parquet, &path).unwrap(), events);
    }

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
            dim: 16,
            epochs: 30,
            batch: 128,
            negatives: 20,
            tower_negatives: 20,
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
            epochs: 1,
            dim: 8,
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
