//! A retrain end to end on a synthetic archive: report, gate, publish, rollback.

use std::fs;
use std::path::{Path, PathBuf};

use recsys_engine::checkpoint;
use recsys_engine::device::Backend;
use recsys_engine::model::ModelConfig;
use recsys_index::IndexConfig;
use recsys_index::generations::{self, generation_dir};

use super::*;
use crate::archive;
use crate::sink::MemoryUserVectorSink;
use recsys_engine::synth::SynthConfig;
use recsys_index::store::MemoryUserStore;
use std::sync::Arc;

fn options(from: &Path, out: PathBuf, models: &Path, epochs: usize, force: bool) -> RetrainOptions {
    let mut model = ModelConfig::default();
    model.mf.dim = 16;
    RetrainOptions {
        from: from.to_owned(),
        days: 3,
        out,
        models: models.to_owned(),
        epochs: Some(epochs),
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
