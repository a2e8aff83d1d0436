//! Exactly-once training state across crashes: a `recsys train` child process is killed
//! with SIGKILL at several points of a stream on each broker; after each kill the
//! newest checkpoint must account for every message below its offsets exactly once
//! (applied + dead-lettered + skipped = next offset, per partition), and after restarts
//! training reaches the end of the stream.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use recsys::embedded::BrokerKind;
use recsys_engine::checkpoint::{self, CheckpointMeta};
use recsys_engine::device::cpu_autodiff_device;
use recsys_engine::synth::SynthConfig;
use recsys_testkit::RedisServer;

fn start_trainer(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_recsys"))
        .arg("--config")
        .arg(config)
        .arg("train")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("recsys binary")
}

fn newest(dir: &Path) -> Option<(u64, CheckpointMeta)> {
    let (seq, path) = checkpoint::list(dir).ok()?.into_iter().next()?;
    let (_, meta) = checkpoint::load(&path, cpu_autodiff_device()).ok()?;
    Some((seq, meta))
}

/// Every message below the checkpoint's offset is accounted for exactly once.
fn assert_accounted(meta: &CheckpointMeta) {
    for (part, &next) in &meta.offsets {
        let n = |m: &BTreeMap<String, u64>| m.get(part).copied().unwrap_or(0);
        assert_eq!(
            n(&meta.applied) + n(&meta.dead_lettered) + n(&meta.skipped),
            next as u64,
            "{part}: {meta:?}"
        );
    }
}

on_both_brokers!(
    sigkill_at_several_points_loses_nothing_and_applies_nothing_twice => mf
);

async fn mf(broker: BrokerKind) {
    kill_and_resume(broker, "").await;
}

/// The same with the two-tower model, whose checkpoints also carry the MLPs, Adam's
/// state, histories and item features.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tower_trainer_survives_sigkill_the_same_way() {
    kill_and_resume(
        BrokerKind::Mock,
        "[model]\nkind = \"two_tower\"\n[model.two_tower]\ndim = 32\nhidden = 32\n",
    )
    .await;
}

async fn kill_and_resume(broker: BrokerKind, model_toml: &str) {
    let redis = RedisServer::start();
    let (kafka, data, sent) = crate::broker_with_stream(
        broker,
        SynthConfig {
            users: 500,
            items: 300,
            events: 30_000,
            clusters: 6,
            seed: 21,
            ..SynthConfig::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("checkpoints");
    let config = dir.path().join("recsys.toml");
    std::fs::write(
        &config,
        format!(
            "[trainer]\nbrokers = \"{}\"\nbatch_size = 128\nbatch_timeout_ms = 50\n\
             checkpoint_dir = \"{}\"\ncheckpoint_interval_ms = 150\n\
             admin_bind = \"127.0.0.1:0\"\n[events]\nmax_age_s = 0\n[store]\nredis_url = \"{}\"\n{model_toml}\n\
             [kafka]\n{}",
            kafka.bootstrap_servers(),
            ckpt.display(),
            redis.url(),
            toml::to_string(&kafka.kafka_config()).unwrap(),
        ),
    )
    .unwrap();

    // Kill at three points, each after the trainer has written new checkpoints.
    let mut last_seq = None;
    for round in 0..3 {
        let mut child = start_trainer(&config);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let seq = newest(&ckpt).map(|(s, _)| s);
            if seq.is_some() && seq > last_seq.map(|s: u64| s + 1) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: no new checkpoint"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (seq, meta) = newest(&ckpt).expect("a checkpoint survives the kill");
        assert_accounted(&meta);
        let done: i64 = meta.offsets.values().sum();
        assert!(
            done < sent as i64,
            "round {round} already saw the whole stream"
        );
        last_seq = Some(seq);
    }

    // A last run goes to the end of the stream, then stops on SIGTERM with a final
    // checkpoint.
    let child = start_trainer(&config);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some((_, meta)) = newest(&ckpt)
            && meta.offsets.values().sum::<i64>() == sent as i64
        {
            break;
        }
        assert!(Instant::now() < deadline, "training never reached the end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = child;
    child.wait().unwrap();
    let (_, meta) = newest(&ckpt).unwrap();
    assert_accounted(&meta);
    let (_, path) = checkpoint::list(&ckpt).unwrap().into_iter().next().unwrap();
    let (model, _) = checkpoint::load(&path, cpu_autodiff_device()).unwrap();
    assert_eq!(
        model.kind() == recsys_engine::model::ModelKind::TwoTower,
        !model_toml.is_empty(),
        "the checkpoint holds the configured model"
    );
    let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
    assert_eq!(
        total(&meta.applied) + total(&meta.skipped),
        data.train.len() as u64
    );
    assert_eq!(total(&meta.dead_lettered), 5);
}
