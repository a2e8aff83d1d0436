//! `recsys bench train`: the trainer's own steps (MF and two-tower) on synthetic events,
//! the same MF step written in PyTorch on the same events, and resident memory per user.

use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct TrainBenchOptions {
    pub users: usize,
    pub items: usize,
    pub events: usize,
    pub dim: usize,
    pub batch: usize,
    /// Users in the memory measurement.
    pub memory_users: usize,
    pub seed: u64,
    pub backend: recsys_engine::device::Backend,
    /// The PyTorch peer script; `None` skips it.
    pub torch_script: Option<std::path::PathBuf>,
}

/// Where the PyTorch peer lives in the source tree.
pub fn default_torch_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/torch_mf.py")
}

impl Default for TrainBenchOptions {
    fn default() -> Self {
        Self {
            users: 100_000,
            items: 100_000,
            events: 500_000,
            dim: 64,
            batch: 1024,
            memory_users: 1_000_000,
            seed: 13,
            backend: recsys_engine::device::Backend::Cpu,
            torch_script: Some(default_torch_script()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainBenchReport {
    pub backend: recsys_engine::device::Backend,
    pub users: usize,
    pub items: usize,
    pub events: usize,
    pub dim: usize,
    pub batch: usize,
    /// Uniform negatives per step, MF and two-tower (their configs' defaults).
    pub negatives: usize,
    pub two_tower_negatives: usize,
    pub mf_events_per_s: f64,
    pub two_tower_events_per_s: Option<f64>,
    /// The same MF step in PyTorch on the same events; null when PyTorch is missing.
    pub torch_mf_events_per_s: Option<f64>,
    /// `mf_events_per_s / torch_mf_events_per_s`.
    pub mf_vs_torch: Option<f64>,
    /// Resident memory added per user at d = `dim` (tables, Adagrad state, id map),
    /// measured as the RSS growth over `memory_users` new users.
    pub bytes_per_user: f64,
    /// The same for the two-tower model (history ring included).
    pub two_tower_bytes_per_user: f64,
    pub memory_users: usize,
}

/// Resident set size of this process, bytes (Linux `/proc/self/status`).
fn rss_bytes() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS in /proc/self/status")?;
    Ok(kb * 1024)
}

/// `recsys bench train`: MF training steps (the trainer's own step: gather, burn
/// autodiff, row-wise Adagrad) on synthetic data, and trainer memory per user.
pub fn train(opts: TrainBenchOptions) -> anyhow::Result<TrainBenchReport> {
    use recsys_engine::device::autodiff_device;
    use recsys_engine::mf::{MfConfig, MfModel};
    use recsys_engine::synth::SynthConfig;
    use recsys_engine::two_tower::{TwoTowerConfig, TwoTowerModel};

    let cfg = MfConfig {
        dim: opts.dim,
        ..MfConfig::default()
    };
    let tower_cfg = TwoTowerConfig {
        dim: opts.dim,
        ..TwoTowerConfig::default()
    };
    eprintln!(
        "generating {} events over {} users x {} items",
        opts.events, opts.users, opts.items
    );
    let data = SynthConfig {
        users: opts.users,
        items: opts.items,
        events: opts.events,
        clusters: 100,
        seed: opts.seed,
        ..SynthConfig::default()
    }
    .generate()
    .map_err(anyhow::Error::msg)?;
    eprintln!("backend {:?}", opts.backend);
    let mut model = MfModel::new(cfg.clone(), autodiff_device(opts.backend)?)?;
    let mf_events_per_s = events_per_s(&data.train, opts.batch, &mut |b| {
        model.train_events(b).map(|_| ())
    })?;
    eprintln!(
        "MF d={} batch {} negatives {}: {mf_events_per_s:.0} events/s",
        opts.dim, opts.batch, cfg.negatives
    );
    drop(model);

    let mut tower = TwoTowerModel::new(tower_cfg.clone(), autodiff_device(opts.backend)?)?;
    let two_tower_events_per_s = events_per_s(&data.train, opts.batch, &mut |b| {
        tower.train_events(b).map(|_| ())
    })?;
    eprintln!(
        "two-tower d={} hidden {} history {} batch {}: {two_tower_events_per_s:.0} events/s",
        opts.dim,
        tower.config().hidden,
        tower.config().history_len,
        opts.batch
    );
    drop(tower);

    let torch_mf_events_per_s = match &opts.torch_script {
        Some(script) => torch_peer(script, &data.train, &opts, &cfg)?,
        None => None,
    };
    let mf_vs_torch = torch_mf_events_per_s.map(|t| mf_events_per_s / t);
    if let Some(r) = mf_vs_torch {
        eprintln!("MF recsys/torch: {r:.2}x");
    }
    drop(data);

    // Memory: a fresh model learns `memory_users` users over 1,000 items; the RSS growth
    // divided by the users is what one user costs (the 1,000 item rows are noise).
    let negatives = cfg.negatives;
    let mut model = MfModel::new(cfg, autodiff_device(opts.backend)?)?;
    let bytes_per_user = memory_per_user(opts.memory_users, opts.batch, |b| {
        model.train_events(b).map(|_| ())
    })?;
    eprintln!(
        "memory: {bytes_per_user:.0} bytes per user over {} users at d={} \
         (tables {} B/user of it: {} f32 + 1 Adagrad accumulator)",
        opts.memory_users,
        opts.dim,
        (opts.dim + 1) * 4,
        opts.dim
    );
    drop(model);
    let mut tower = TwoTowerModel::new(tower_cfg.clone(), autodiff_device(opts.backend)?)?;
    let two_tower_bytes_per_user = memory_per_user(opts.memory_users, opts.batch, |b| {
        tower.train_events(b).map(|_| ())
    })?;
    eprintln!("two-tower memory: {two_tower_bytes_per_user:.0} bytes per user");
    drop(tower);
    Ok(TrainBenchReport {
        backend: opts.backend,
        users: opts.users,
        items: opts.items,
        events: opts.events,
        dim: opts.dim,
        batch: opts.batch,
        negatives,
        two_tower_negatives: tower_cfg.negatives,
        mf_events_per_s,
        two_tower_events_per_s: Some(two_tower_events_per_s),
        torch_mf_events_per_s,
        mf_vs_torch,
        bytes_per_user,
        two_tower_bytes_per_user,
        memory_users: opts.memory_users,
    })
}

/// Training throughput over `events` in batches, after 5 warm-up batches (the first
/// steps allocate the tables and burn's buffers).
fn events_per_s(
    events: &[recsys_schemas::Event],
    batch: usize,
    step: &mut dyn FnMut(&[recsys_schemas::Event]) -> recsys_engine::Result<()>,
) -> anyhow::Result<f64> {
    for b in events.chunks(batch).take(5) {
        step(b)?;
    }
    let started = Instant::now();
    let mut trained = 0usize;
    for b in events.chunks(batch).skip(5) {
        step(b)?;
        trained += b.len();
    }
    Ok(trained as f64 / started.elapsed().as_secs_f64())
}

/// RSS growth per user while `train` learns `users` new users (over 1,000 items, whose
/// rows are noise next to the users').
fn memory_per_user(
    users: usize,
    batch_size: usize,
    mut train: impl FnMut(&[recsys_schemas::Event]) -> recsys_engine::Result<()>,
) -> anyhow::Result<f64> {
    // The first 1% of users (at least one batch) warm up: the step's scratch buffers and
    // allocator arenas are a fixed cost, not a per-user one, so growth is measured after.
    let warm = (users / 100).max(batch_size).min(users);
    let mut before = rss_bytes()?;
    let mut batch = Vec::with_capacity(batch_size);
    for u in 0..users {
        batch.push(recsys_schemas::Event {
            user_id: format!("user-{u:09}"),
            item_id: format!("item-{}", u % 1000),
            kind: "click".into(),
            weight: 1.0,
            ts: 0,
            event_id: None,
        });
        if batch.len() == batch_size {
            train(&batch)?;
            batch.clear();
        }
        if u + 1 == warm {
            if !batch.is_empty() {
                train(&batch)?;
                batch.clear();
            }
            before = rss_bytes()?;
        }
    }
    if !batch.is_empty() {
        train(&batch)?;
    }
    Ok(rss_bytes()?.saturating_sub(before) as f64 / (users - warm).max(1) as f64)
}

/// Runs the PyTorch peer on the same events (as dense rows); `None` when `python3` or
/// PyTorch is missing, with the reason on stderr.
fn torch_peer(
    script: &std::path::Path,
    events: &[recsys_schemas::Event],
    opts: &TrainBenchOptions,
    cfg: &recsys_engine::mf::MfConfig,
) -> anyhow::Result<Option<f64>> {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import torch"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        _ => {
            eprintln!(
                "PyTorch peer skipped: `python3 -c 'import torch'` failed (pip install torch)"
            );
            return Ok(None);
        }
    }
    let mut users = recsys_index::ids::IdMap::new();
    let mut items = recsys_index::ids::IdMap::new();
    let mut bytes = Vec::with_capacity(events.len() * 8);
    for e in events {
        bytes.extend_from_slice(&(users.get_or_insert(&e.user_id) as i32).to_le_bytes());
        bytes.extend_from_slice(&(items.get_or_insert(&e.item_id) as i32).to_le_bytes());
    }
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("events.bin");
    std::fs::write(&data, bytes)?;
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg("--data")
        .arg(&data)
        .args(["--users", &users.len().to_string()])
        .args(["--items", &items.len().to_string()])
        .args(["--dim", &opts.dim.to_string()])
        .args(["--batch", &opts.batch.to_string()])
        .args(["--lr", &cfg.learning_rate.to_string()])
        .args(["--negatives", &cfg.negatives.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        anyhow::bail!("{} failed: {}", script.display(), out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(last).with_context(|| format!("torch peer printed {last:?}"))?;
    Ok(v["events_per_s"].as_f64())
}
