//! The trainer seen by an operator: `recsys train` serves `/healthz`, `/readyz` and
//! `/metrics` on `trainer.admin_bind`. Against a real broker process (tansu) that is
//! killed: `/readyz` turns 503 on its broker check while it is gone, `/healthz` stays
//! 200, and `/metrics` carries the error counters, the consumer lag per partition and
//! the freshness histograms. Started again, the broker brings `/readyz` back to 200
//! (the ignored test: see its comment).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use recsys::allinone::topics;
use recsys::config::Config;
use recsys::embedded::{BrokerKind, TestBroker};
use recsys_engine::synth::SynthConfig;
use recsys_schemas::KafkaConfig;
use recsys_testkit::{HttpClient, RedisServer, TansuServer, free_port};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut client = HttpClient::connect(addr).ok()?;
    let r = client.get(path).ok()?;
    Some((r.status, String::from_utf8_lossy(&r.body).into_owned()))
}

/// Polls `path` until its status is `want`, for at most `within`; returns the body.
/// Fails at once, with its exit status, if the trainer has exited.
async fn until_status(
    trainer: &mut Killed,
    addr: SocketAddr,
    path: &str,
    want: u16,
    within: Duration,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let got = tokio::task::spawn_blocking({
            let path = path.to_owned();
            move || get(addr, &path)
        })
        .await
        .unwrap();
        if let Some((status, body)) = &got
            && *status == want
        {
            return body.clone();
        }
        if let Ok(Some(status)) = trainer.0.try_wait() {
            panic!("the trainer exited ({status}) while {path} was polled for {want}");
        }
        assert!(
            Instant::now() < deadline,
            "{path} never answered {want} within {within:?}; last: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_when_the_broker_goes() {
    broker_down_and_back(false).await;
}

/// Not in the default run: after the broker returns (tansu 0.6.0 restarted empty, its
/// topics created again), the trainer process dies of SIGSEGV in roughly one run in ten
/// to twenty. A core dump puts it in librdkafka 2.12.1's own thread, updating its
/// metadata cache from the new broker's answer (`rd_kafka_metadata_update_op` →
/// `rd_kafka_metadata_cache_find` → `strcmp`); no recsys code is on the stack. Run it
/// with `cargo test --test e2e -- --ignored readyz_recovers`.
#[ignore = "the trainer sometimes dies of SIGSEGV after the broker returns; see the comment"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_recovers_when_the_broker_returns() {
    broker_down_and_back(true).await;
}

async fn broker_down_and_back(and_back: bool) {
    let redis = RedisServer::start();
    let broker = TestBroker::start(BrokerKind::Tansu, &topics(&Config::default(), 2))
        .await
        .unwrap();
    let TestBroker::Tansu { server, bootstrap } = broker else {
        unreachable!("a tansu broker was asked for")
    };
    let port = server.port;
    let mut server = Some(server);
    let brokers = bootstrap.clone();
    let data = SynthConfig {
        users: 200,
        items: 100,
        events: 5_000,
        seed: 5,
        ..SynthConfig::default()
    }
    .generate()
    .unwrap();
    let produced = tokio::task::spawn_blocking({
        let brokers = brokers.clone();
        let kafka_cfg = KafkaConfig::from_pairs([("batch.num.messages", "1")]);
        move || recsys::demo::produce(&kafka_cfg, &brokers, "events", &data, 2, None)
    })
    .await
    .unwrap()
    .unwrap();
    assert!(produced > 0);

    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("recsys.toml");
    std::fs::write(
        &config,
        format!(
            "[trainer]\nbrokers = \"{brokers}\"\nadmin_bind = \"{admin}\"\nbatch_size = 128\n\
             publish_interval_ms = 200\n[events]\nmax_age_s = 0\n[store]\nredis_url = \"{}\"\n",
            redis.url()
        ),
    )
    .unwrap();
    let mut trainer = Killed(
        Command::new(env!("CARGO_BIN_EXE_recsys"))
            .arg("--config")
            .arg(&config)
            .arg("train")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let ready = until_status(&mut trainer, admin, "/readyz", 200, Duration::from_secs(60)).await;
    assert!(ready.contains("\"ready\":true"), "{ready}");
    // librdkafka reports each partition's end offset with its statistics, every second.
    let wanted = [
        "recsys_trainer_publish_errors_total",
        "recsys_trainer_checkpoint_errors_total",
        "recsys_trainer_snapshot_errors_total",
        "recsys_trainer_consumer_lag{partition=\"0\"} 0",
        "recsys_trainer_consumer_lag{partition=\"1\"} 0",
        "recsys_trainer_event_lag_seconds_count",
        "recsys_trainer_publish_delay_seconds_count",
        "recsys_trainer_ready 1",
    ];
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics =
            until_status(&mut trainer, admin, "/metrics", 200, Duration::from_secs(5)).await;
        let missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|w| !metrics.contains(w))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing:?} missing from\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The broker goes away: not ready, naming why; still alive.
    server.take().unwrap().kill();
    // Either librdkafka reports no broker up, or it stops reporting at all while the
    // loop waits out a publish the broker cannot acknowledge: the broker check fails.
    let down = until_status(&mut trainer, admin, "/readyz", 503, Duration::from_secs(30)).await;
    assert!(down.contains(r#""name":"broker","ok":false"#), "{down}");
    assert_eq!(get(admin, "/healthz").map(|r| r.0), Some(200));
    if !and_back {
        return;
    }

    // It comes back (empty: its storage was memory), topics are created again.
    let again = tokio::task::spawn_blocking(move || TansuServer::start_on(port))
        .await
        .unwrap()
        .unwrap();
    recsys::embedded::create_topics(&bootstrap, &topics(&Config::default(), 2))
        .await
        .unwrap();
    let ready = until_status(&mut trainer, admin, "/readyz", 200, Duration::from_secs(90)).await;
    assert!(ready.contains("\"ready\":true"), "{ready}");
    drop(again);
}
