//! Generation switches (docs/DESIGN.md §4): a replica following `models/CURRENT` switches its
//! index and its user-key prefix together, so no answer mixes generations while the
//! pointer flips under load; and the online trainer follows a nightly retrain, replaying
//! exactly the events after the retrain's cutoff into the new generation.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::follow::Replica;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use recsys::allinone::{Pipeline, memory_store};
use recsys::config::Config;
use recsys::demo::produce;
use recsys::embedded::EmbeddedKafka;
use recsys_engine::checkpoint::{self, CheckpointMeta};
use recsys_engine::device::{Backend, cpu_autodiff_device};
use recsys_engine::synth::SynthConfig;
use recsys_index::generations::{self, Current};
use recsys_index::ids::IdMap;
use recsys_index::snapshot;
use recsys_index::store::MemoryUserStore;
use recsys_index::{IndexConfig, ItemIndex};
use recsys_schemas::api::{RecommendationResponse, Source};
use recsys_serving::FollowConfig;
use recsys_testkit::HttpClient;

const USERS: usize = 8;

/// Generation `g`'s snapshot: items `a` and `b` on two axes. Generation 1 scores `a`
/// above `b` for its user vectors, generation 2 the other way round, and every pairing
/// of a user vector with an index gives a different (item, score), so a mixed answer
/// cannot pass for a clean one.
fn write_generation(models: &Path, g: u64) {
    let (a, b) = if g == 1 { (1.0, 0.5) } else { (0.5, 1.0) };
    let mut ids = IdMap::new();
    let rows = [ids.get_or_insert("a"), ids.get_or_insert("b")].map(u64::from);
    let vectors = [a, 0.0, 0.0, 0.0, 0.0, b, 0.0, 0.0];
    let index = ItemIndex::build(4, &IndexConfig::default(), &rows, &vectors).unwrap();
    let dir = generations::snapshot_dir(models, g);
    snapshot::write(&dir, g, &ids, &index, &BTreeMap::new(), 2).unwrap();
}

/// What a clean answer of generation `g` is: (item, score).
fn expected(g: u64) -> (&'static str, f32) {
    if g == 1 { ("a", 1.0) } else { ("b", 2.0) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_generations_under_load_never_mixes_them() {
    let kafka = EmbeddedKafka::start(&[("item-vectors", 2), ("item-popularity", 1)]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    write_generation(&models, 1);
    write_generation(&models, 2);
    let flip = |g: u64| {
        generations::set_current(
            &models,
            Current {
                generation: g,
                previous: Some(3 - g),
            },
        )
        .unwrap()
    };
    flip(1);
    // User vectors of both generations: generation 1's point at `a`, generation 2's at
    // `b` with twice the length.
    let store = Arc::new(MemoryUserStore::new());
    for u in 0..USERS {
        store.put_vector(1, &format!("u{u}"), vec![1.0, 0.0, 0.0, 0.0]);
        store.put_vector(2, &format!("u{u}"), vec![0.0, 2.0, 0.0, 0.0]);
    }

    let follow = FollowConfig {
        brokers: kafka.bootstrap_servers().to_owned(),
        items_topic: String::new(),
        models_dir: models.to_str().unwrap().to_owned(),
        generation_poll_ms: 5,
        ..FollowConfig::default()
    };
    let replica = Replica::start_with(follow, store, 2);
    let (catalog, status, addr) = (
        replica.catalog.clone(),
        replica.status.clone(),
        replica.addr,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while catalog.load().item_count() == 0 {
        assert!(Instant::now() < deadline, "generation 1 never loaded");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Clients ask without pause while the pointer flips back and forth.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|c| {
            let stop = stop.clone();
            tokio::task::spawn_blocking(move || {
                let mut http = HttpClient::connect(addr).unwrap();
                let mut seen = [0usize; 3];
                let mut n = c;
                while !stop.load(Ordering::Relaxed) {
                    let path = format!("/v1/users/u{}/recommendations?k=1", n % USERS);
                    let r = http.get(&path).unwrap();
                    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                    let body: RecommendationResponse = serde_json::from_slice(&r.body).unwrap();
                    assert_eq!(body.source, Source::Personal, "{body:?}");
                    let g = body.model_generation;
                    let (item, score) = expected(g);
                    assert_eq!(body.items.len(), 1, "{body:?}");
                    assert_eq!(body.items[0].item_id, item, "mixed generations: {body:?}");
                    assert!(
                        (body.items[0].score - score).abs() < 1e-4,
                        "mixed generations: {body:?}"
                    );
                    seen[g as usize] += 1;
                    n += 1;
                }
                seen
            })
        })
        .collect();
    let mut switches = 0;
    for round in 0..12 {
        let to = if round % 2 == 0 { 2 } else { 1 };
        flip(to);
        let deadline = Instant::now() + Duration::from_secs(30);
        while catalog.load().generation != to {
            assert!(
                Instant::now() < deadline,
                "round {round}: no switch to {to}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        switches += 1;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut seen = [0usize; 3];
    for c in clients {
        let s = c.await.expect("a client saw a failed or mixed answer");
        for g in 1..3 {
            seen[g] += s[g];
        }
    }
    eprintln!("answers per generation: {seen:?}");
    assert!(
        seen[1] > 20 && seen[2] > 20,
        "both generations served: {seen:?}"
    );
    assert_eq!(
        status.generation_switches.load(Ordering::Relaxed),
        switches,
        "the follower switched once per flip"
    );

    // A pointer to a generation without a snapshot is not followed.
    flip(2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while catalog.load().generation != 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    generations::set_current(
        &models,
        Current {
            generation: 7,
            previous: Some(2),
        },
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(catalog.load().generation, 2, "generation 7 has no snapshot");
    assert_eq!(catalog.load().item_count(), 2);

    replica.stop().await;
}

/// The high watermark of each partition of `topic`.
fn ends(brokers: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            let (_, high) = c
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .unwrap();
            (p, high)
        })
        .collect()
}

fn newest(models: &Path, g: u64) -> CheckpointMeta {
    checkpoint::load_latest(
        &generations::generation_dir(models, g),
        &cpu_autodiff_device(),
    )
    .unwrap()
    .unwrap()
    .1
}

/// Per partition: messages accounted for (applied, dead-lettered, skipped).
fn accounted(meta: &CheckpointMeta) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for m in [&meta.applied, &meta.dead_lettered, &meta.skipped] {
        for (k, n) in m {
            *out.entry(k.clone()).or_default() += n;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_trainer_follows_a_retrain_and_replays_after_its_cutoff() {
    let synth = SynthConfig {
        users: 300,
        items: 150,
        events: 12_000,
        clusters: 5,
        days: 3,
        seed: 21,
        ..SynthConfig::default()
    };
    let (kafka, _data, sent) =
        crate::broker_with_stream(recsys::embedded::BrokerKind::Mock, synth.clone()).await;
    let brokers = kafka.bootstrap_servers().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let archive_dir = dir.path().join("archive");
    let models = dir.path().join("models");

    // Tonight's archive: everything produced so far.
    let opts = recsys_trainer::archive::ArchiveOptions {
        brokers: brokers.clone(),
        kafka: recsys_schemas::KafkaConfig::default(),
        topic: "events".into(),
        group_id: "test-archive".into(),
        out: archive_dir.clone(),
        until_caught_up: true,
        flush_events: 5_000,
        flush_interval: Duration::from_secs(1),
        // The generator's history is from January 2026.
        limits: recsys_schemas::EventLimits::replay(),
    };
    tokio::task::spawn_blocking(move || recsys_trainer::archive::run(&opts, &|| false))
        .await
        .unwrap()
        .unwrap();
    let cutoff = recsys_trainer::archive::committed(&archive_dir).unwrap();
    assert_eq!(cutoff, ends(&brokers, "events", 2));

    // The online trainer (and serving) evolve generation 1 over the whole stream.
    // The generator's history is from January 2026: no bound on how old an event is.
    let mut cfg = Config {
        events: recsys_schemas::EventLimits::replay(),
        ..Config::default()
    };
    cfg.trainer.brokers = brokers.clone();
    cfg.trainer.batch_size = 256;
    cfg.trainer.publish_interval_ms = 100;
    cfg.trainer.models_dir = models.to_str().unwrap().to_owned();
    cfg.trainer.generation_poll_ms = 50;
    cfg.serving.follow.generation_poll_ms = 50;
    cfg.serving.bind = "127.0.0.1:0".into();
    cfg.serving.workers = 1;
    cfg.model.mf.dim = 16;
    let (writer, reader) = memory_store(cfg.trainer.history_len);
    let mut pipeline = Pipeline::start(&cfg, writer.clone(), reader).unwrap();
    pipeline
        .wait_for(sent as u64, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(
        generations::current(&models).unwrap().unwrap().generation,
        1,
        "the trainer made its generation current"
    );

    // Events after the cutoff: the online model learns them before the switch.
    let later = SynthConfig {
        seed: 22,
        events: 3_000,
        ..synth
    }
    .generate()
    .unwrap();
    let after = {
        let (brokers, later) = (brokers.clone(), later.clone());
        let kafka_cfg = recsys_schemas::KafkaConfig::default();
        tokio::task::spawn_blocking(move || {
            produce(&kafka_cfg, &brokers, "events", &later, 0, None)
        })
        .await
        .unwrap()
        .unwrap()
    };
    pipeline
        .wait_for((sent + after) as u64, Duration::from_secs(120))
        .await
        .unwrap();
    let end = ends(&brokers, "events", 2);

    // The nightly retrain publishes generation 2 (the online trainer owns g1).
    let retrain = recsys_trainer::retrain::RetrainOptions {
        from: archive_dir.clone(),
        days: 3,
        out: dir.path().join("report"),
        models: models.clone(),
        epochs: Some(2),
        batch: 256,
        margin: 0.002,
        force: false,
        read_rows: 4096,
        max_test_users: 1_000,
        seed: 5,
        model: cfg.model.clone(),
        index: cfg.index.clone(),
        backend: Backend::Cpu,
        topic: "events".into(),
        progress: false,
    };
    let sink = writer.clone();
    let report = tokio::task::spawn_blocking(move || {
        recsys_trainer::retrain::run(&retrain, Some(sink.as_ref()))
    })
    .await
    .unwrap()
    .unwrap();
    assert!(report.published, "{}", report.decision);
    assert_eq!(report.new_generation, 2);
    assert_eq!(report.users_written, report.users);

    // Trainer and serving follow; the trainer replays exactly the events after the
    // cutoff into generation 2.
    let deadline = Instant::now() + Duration::from_secs(60);
    while pipeline.stats.generation.load(Ordering::Relaxed) != 2
        || pipeline.catalog.load().generation != 2
    {
        assert!(Instant::now() < deadline, "no switch to generation 2");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pipeline
        .wait_for((sent + 2 * after) as u64, Duration::from_secs(120))
        .await
        .unwrap();
    let model = pipeline.stop_trainer().await.unwrap();
    assert_eq!(
        pipeline.stats.generation_switches.load(Ordering::Relaxed),
        1
    );
    assert_eq!(
        pipeline.messages_done(),
        (sent + 2 * after) as u64,
        "nothing replayed twice"
    );

    // Generation 1 was left complete: every message accounted for up to the end.
    let g1 = newest(&models, 1);
    assert_eq!(g1.generation, 1);
    for (p, &high) in &end {
        let k = format!("events/{p}");
        assert_eq!(g1.offsets.get(&k), Some(&high), "g1 {k}");
        assert_eq!(accounted(&g1).get(&k).copied().unwrap_or(0), high as u64);
    }
    // Generation 2 holds exactly the events between cutoff and end on top of the retrain.
    let g2 = newest(&models, 2);
    assert_eq!(g2.generation, 2);
    let mut replayed = 0;
    for (p, &high) in &end {
        let k = format!("events/{p}");
        assert_eq!(g2.offsets.get(&k), Some(&high), "g2 {k}");
        let n = accounted(&g2).get(&k).copied().unwrap_or(0);
        assert_eq!(
            n as i64,
            high - cutoff[p],
            "g2 {k}: replayed since the cutoff"
        );
        replayed += n;
    }
    assert_eq!(replayed, after as u64);

    // Serving follows generation 2: its catalog converges to the trainer's final model,
    // and users get generation-2 answers from their generation-2 vectors.
    pipeline
        .wait_for_catalog(&model, Duration::from_secs(60))
        .await
        .unwrap();
    let user = later.train[0].user_id.clone();
    let addr = pipeline.addr;
    let r = tokio::task::spawn_blocking(move || {
        HttpClient::connect(addr)?.get(&format!("/v1/users/{user}/recommendations?k=5"))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(r.status, 200);
    let body: RecommendationResponse = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body.model_generation, 2);
    assert_eq!(body.source, Source::Personal, "{body:?}");
    pipeline.shutdown().await.unwrap();
}
