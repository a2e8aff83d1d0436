//! The Parquet archive keeps every event exactly once across crashes: `recsys archive` is
//! killed with SIGKILL at several points of a stream on each broker, restarted,
//! and finally run as a catch-up job; the archive then holds each produced event once.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use recsys::embedded::BrokerKind;
use recsys_engine::synth::SynthConfig;
use recsys_trainer::archive;

fn archiver(config: &Path, out: &Path, catch_up: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_recsys"));
    c.arg("--config")
        .arg(config)
        .arg("archive")
        .arg("--out")
        .arg(out)
        .args(["--flush-events", "1500", "--flush-interval-s", "1"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if catch_up {
        c.arg("--until-caught-up");
    }
    c
}

fn committed_total(out: &Path) -> i64 {
    archive::committed(out).map_or(0, |m| m.values().sum())
}

on_both_brokers!(sigkill_mid_stream_keeps_every_event_exactly_once => kill_and_catch_up);

async fn kill_and_catch_up(broker: BrokerKind) {
    let (kafka, data, sent) = crate::broker_with_stream(
        broker,
        SynthConfig {
            users: 400,
            items: 200,
            events: 20_000,
            clusters: 5,
            days: 3,
            seed: 8,
            ..SynthConfig::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("archive");
    let config = dir.path().join("recsys.toml");
    std::fs::write(
        &config,
        // The generator's history is from January 2026: no bound on age.
        format!(
            "[trainer]\nbrokers = \"{}\"\n[events]\nmax_age_s = 0\n",
            kafka.bootstrap_servers()
        ),
    )
    .unwrap();

    let mut last = 0;
    for round in 0..3 {
        let mut child = archiver(&config, &out, false).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while committed_total(&out) <= last {
            assert!(Instant::now() < deadline, "round {round}: no progress");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        child.kill().unwrap(); // SIGKILL, possibly mid-flush
        child.wait().unwrap();
        last = committed_total(&out);
        assert!(
            last < sent as i64,
            "round {round} already archived everything"
        );
    }
    let status = archiver(&config, &out, true).status().unwrap();
    assert!(status.success());
    assert_eq!(committed_total(&out), sent as i64);

    let mut seen = HashSet::new();
    let mut count = 0usize;
    let days = archive::days(&out).unwrap();
    assert_eq!(days.len(), 3, "{days:?}");
    archive::read_days(&out, &days, 4096, &mut |day, events| {
        for e in events {
            assert_eq!(archive::day_of(e.ts), day);
            assert!(
                seen.insert(e.event_id.clone().unwrap()),
                "duplicate {:?}",
                e.event_id
            );
            count += 1;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(
        count,
        data.train.len(),
        "every valid event once (5 malformed skipped)"
    );
    let produced: HashSet<String> = data
        .train
        .iter()
        .map(|e| e.event_id.clone().unwrap())
        .collect();
    assert_eq!(seen, produced);
}
