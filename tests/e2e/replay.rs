//! The streaming evaluation measures what production does: its online arm runs the same
//! per-batch function as the Kafka loop of `recsys train`, and it ranks the way serving
//! answers.

use std::time::Duration;

use recsys::allinone::{Pipeline, memory_store, topics};
use recsys::config::Config;
use recsys::demo::produce;
use recsys::embedded::EmbeddedKafka;
use recsys_engine::device::cpu_autodiff_device;
use recsys_engine::model::Model;
use recsys_engine::synth::SynthConfig;
use recsys_trainer::replay::{Evolving, OnlineLearner};

fn parts(m: &Model) -> String {
    match m {
        Model::Mf(m) => format!("{:?}", m.to_parts()),
        Model::TwoTower(_) => unreachable!("the test trains MF"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_learns_bit_for_bit_what_the_kafka_loop_learns() {
    // The generator's history is from January 2026: no bound on how old an event is.
    let mut cfg = Config {
        events: recsys_schemas::EventLimits::replay(),
        ..Config::default()
    };
    // One partition, so the loop reads the stream in the order it was produced; full
    // batches (a long timeout) but the last.
    let kafka = EmbeddedKafka::start(&topics(&cfg, 1)).unwrap();
    cfg.trainer.brokers = kafka.bootstrap_servers().to_owned();
    cfg.trainer.batch_size = 256;
    cfg.trainer.batch_timeout_ms = 60_000;
    cfg.serving.bind = "127.0.0.1:0".into();
    cfg.model.mf.dim = 16;
    let data = SynthConfig {
        users: 200,
        items: 150,
        events: 3_000,
        clusters: 6,
        seed: 21,
        ..SynthConfig::default()
    }
    .generate()
    .unwrap();
    let sent = {
        let (brokers, data) = (cfg.trainer.brokers.clone(), data.clone());
        let kafka_cfg = recsys_schemas::KafkaConfig::default();
        tokio::task::spawn_blocking(move || produce(&kafka_cfg, &brokers, "events", &data, 0, None))
            .await
            .unwrap()
            .unwrap()
    };
    let (writer, reader) = memory_store(cfg.trainer.history_len);
    let mut pipeline = Pipeline::start(&cfg, writer, reader).unwrap();
    pipeline
        .wait_for(sent as u64 - 200, Duration::from_secs(120))
        .await
        .unwrap();
    // All but the last partial batch are in; the rest arrives and is trained at stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let live = pipeline.stop_trainer().await.unwrap();
    assert_eq!(
        pipeline
            .stats
            .events_trained
            .load(std::sync::atomic::Ordering::Relaxed),
        sent as u64
    );
    pipeline.shutdown().await.unwrap();

    let model = Model::new(&cfg.model, cpu_autodiff_device()).unwrap();
    let mut replayed = OnlineLearner::new(&cfg.trainer, model);
    for batch in data.train.chunks(cfg.trainer.batch_size) {
        replayed.train(batch.to_vec()).unwrap();
    }
    assert_eq!(parts(replayed.model()), parts(&live));
}

/// What a serving catalog holds, read the way the streaming evaluation reads an arm.
struct CatalogState {
    catalog: std::sync::Arc<recsys_serving::Catalog>,
    popular: std::collections::HashMap<String, f64>,
}

impl recsys_trainer::prequential::ServedState for CatalogState {
    fn dim(&self) -> usize {
        self.catalog.index.as_ref().map_or(0, |i| i.dim())
    }
    fn items(&self) -> usize {
        self.catalog.ids.len()
    }
    fn item_vector(&self, row: u32) -> Option<&[f32]> {
        self.catalog.index.as_ref()?.vector(u64::from(row))
    }
    fn popularity(&self, row: u32) -> f64 {
        let id = self.catalog.ids.id(row).unwrap_or_default();
        self.popular.get(id).copied().unwrap_or(0.0)
    }
    fn row(&self, item: &str) -> Option<u32> {
        self.catalog.ids.get(item)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_ranks_as_serving_answers_personal_fold_in_and_popular() {
    use std::sync::Arc;

    use rand::{RngExt, SeedableRng, rngs::StdRng};
    use recsys_index::IndexConfig;
    use recsys_index::store::MemoryUserStore;
    use recsys_serving::{AppState, CatalogHolder, FollowStatus, ServingConfig};
    use recsys_trainer::prequential::rank_as_served;

    let mut rng = StdRng::seed_from_u64(4);
    let items: Vec<(String, Vec<f32>)> = (0..60)
        .map(|i| {
            let v = (0..8).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            (format!("i{i}"), v)
        })
        .collect();
    let popular: Vec<(String, f32)> = (0..30)
        .map(|i| (format!("i{}", i * 2), 1.0 - i as f32 / 40.0))
        .collect();
    let catalog = Arc::new(CatalogHolder::new(1, IndexConfig::default()));
    catalog.apply_items(1, items.clone()).unwrap();
    catalog.set_popular(1, popular.clone()).unwrap();
    let store = Arc::new(MemoryUserStore::new());
    let personal: Vec<f32> = (0..8).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    store.put_vector(1, "personal", personal.clone());
    let history = |n: usize| -> Vec<String> { (0..n).map(|k| format!("i{}", k * 7)).collect() };
    store.push_history("personal", &history(4), 500);
    store.push_history("folded", &history(6), 500);
    let follow = Arc::new(FollowStatus::default());
    follow.set_ready();
    let cfg = ServingConfig {
        bind: "127.0.0.1:0".into(),
        workers: 1,
        ..ServingConfig::default()
    };
    let state = AppState::new(catalog.clone(), store.clone(), cfg, follow).unwrap();
    let (server, addr) = recsys_serving::start(state).unwrap();
    let handle = server.handle();
    tokio::spawn(server);

    let served = CatalogState {
        catalog: catalog.load(),
        popular: popular
            .iter()
            .map(|(i, s)| (i.clone(), f64::from(*s)))
            .collect(),
    };
    for (user, source) in [
        ("personal", "personal"),
        ("folded", "fold_in"),
        ("stranger", "popular"),
    ] {
        let answer = tokio::task::spawn_blocking(move || {
            let mut http = recsys_testkit::HttpClient::connect(addr).unwrap();
            http.get(&format!("/v1/users/{user}/recommendations?k=10"))
                .unwrap()
                .json()
                .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(answer["source"], source, "{answer}");
        let got: Vec<String> = answer["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["item_id"].as_str().unwrap().to_owned())
            .collect();
        // Every item ranked as the replay ranks it for this user; the best 10 in order.
        let record = store.get(1, user);
        let mut ranked: Vec<(f64, String)> = items
            .iter()
            .filter_map(|(id, _)| {
                let r = rank_as_served(&served, record.vector.as_deref(), record.recent.iter(), id);
                Some((r.rank?, id.clone()))
            })
            .collect();
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
        let want: Vec<String> = ranked.into_iter().take(10).map(|r| r.1).collect();
        assert_eq!(got, want, "{user}");
        assert!(
            got.iter().all(|i| !record.recent.iter().any(|r| r == i)),
            "{user}: a recent item returned"
        );
    }
    handle.stop(true).await;
}
