//! The whole path: events produced to a Kafka-protocol broker, trained on, user vectors
//! written to a real redis-server, recommendations fetched over HTTP.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use recsys::allinone::{Pipeline, topics};
use recsys::config::Config;
use recsys::demo::produce;
use recsys::embedded::{BrokerKind, EmbeddedKafka, TestBroker};
use recsys_engine::synth::SynthConfig;
use recsys_serving::{RedisUserVectorStore, UserVectorStore};
use recsys_testkit::HttpClient;
use recsys_trainer::sink::{RedisUserVectorSink, UserVectorSink};

use crate::follow::Replica;
use recsys_testkit::RedisServer;

on_both_brokers!(events_to_recommendations_over_http => over_http);

async fn over_http(broker: BrokerKind) {
    let redis = RedisServer::start();
    // The generator's history is from January 2026: no bound on how old an event is.
    let mut cfg = Config {
        events: recsys_schemas::EventLimits::replay(),
        ..Config::default()
    };
    let kafka = TestBroker::start(broker, &topics(&cfg, 2)).await.unwrap();
    cfg.trainer.brokers = kafka.bootstrap_servers().to_owned();
    cfg.kafka = kafka.kafka_config();
    cfg.trainer.batch_size = 256;
    cfg.trainer.publish_interval_ms = 100;
    cfg.serving.bind = "127.0.0.1:0".into();
    cfg.serving.workers = 1;
    let snapshots = tempfile::tempdir().unwrap();
    cfg.trainer.snapshot_dir = snapshots.path().to_str().unwrap().to_owned();

    let data = SynthConfig {
        users: 300,
        items: 200,
        events: 12_000,
        clusters: 8,
        seed: 11,
        ..SynthConfig::default()
    }
    .generate()
    .unwrap();
    let sent = {
        let (brokers, data) = (cfg.trainer.brokers.clone(), data.clone());
        let kafka_cfg = cfg.kafka.clone();
        tokio::task::spawn_blocking(move || produce(&kafka_cfg, &brokers, "events", &data, 5, None))
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(sent, data.train.len() + 5);

    let writer: Arc<dyn UserVectorSink> = Arc::new(
        RedisUserVectorSink::connect(&redis.url(), 3600, cfg.trainer.history_len)
            .await
            .unwrap(),
    );
    let reader: Arc<dyn UserVectorStore> = Arc::new(
        RedisUserVectorStore::connect(&redis.url(), Duration::from_millis(500))
            .await
            .unwrap(),
    );
    let mut pipeline = Pipeline::start(&cfg, writer, reader).unwrap();
    pipeline
        .wait_for(sent as u64, Duration::from_secs(120))
        .await
        .unwrap();
    // The all-in-one server reports the trainer's checks and metrics beside its own.
    let addr = pipeline.addr;
    let (ready, metrics) = tokio::task::spawn_blocking(move || {
        let mut http = HttpClient::connect(addr).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut ready = http.get("/readyz").unwrap();
        while ready.status != 200 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            ready = http.get("/readyz").unwrap();
        }
        let metrics = http.get("/metrics").unwrap();
        (ready, String::from_utf8(metrics.body).unwrap())
    })
    .await
    .unwrap();
    let body = String::from_utf8_lossy(&ready.body).into_owned();
    assert_eq!(ready.status, 200, "{body}");
    assert!(
        body.contains(r#""name":"trainer.broker","ok":true"#),
        "{body}"
    );
    assert!(
        metrics.contains("recsys_trainer_events_trained_total"),
        "{metrics}"
    );
    assert!(metrics.contains("recsys_http_requests_total"), "{metrics}");
    let model = pipeline.stop_trainer().await.unwrap();
    pipeline
        .wait_for_catalog(&model, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(pipeline.stats.snapshots.load(Ordering::Relaxed), 1);

    // A replica started after the trainer stopped starts from the trainer's final
    // snapshot, which covers every published vector: nothing is left to replay.
    let replica = Replica::start(kafka.bootstrap_servers(), snapshots.path(), 50);
    replica.wait_ready().await;
    assert_eq!(replica.status.snapshot_seq.load(Ordering::Relaxed), 0);
    assert_eq!(replica.status.applied.load(Ordering::Relaxed), 0);
    let (ours, theirs) = (pipeline.catalog.load(), replica.catalog.load());
    assert_eq!(theirs.item_count(), model.item_ids().len());
    let query = model.user_vector(&data.test[0].0).unwrap().to_vec();
    let answer = |c: &recsys_serving::Catalog| -> Vec<String> {
        c.index
            .as_ref()
            .unwrap()
            .search(&query, 10)
            .unwrap()
            .iter()
            .map(|(row, _)| c.ids.id(*row as u32).unwrap().to_owned())
            .collect()
    };
    assert_eq!(answer(&theirs), answer(&ours));
    replica.stop().await;
    assert_eq!(
        pipeline
            .stats
            .events_rejected
            .load(std::sync::atomic::Ordering::Relaxed),
        5
    );
    assert_eq!(
        pipeline
            .stats
            .events_trained
            .load(std::sync::atomic::Ordering::Relaxed),
        data.train.len() as u64
    );

    let mut seen: HashMap<String, HashSet<String>> = HashMap::new();
    for e in &data.train {
        seen.entry(e.user_id.clone())
            .or_default()
            .insert(e.item_id.clone());
    }
    let addr = pipeline.addr;
    let users: Vec<String> = data.test.iter().step_by(10).map(|t| t.0.clone()).collect();
    tokio::task::spawn_blocking(move || {
        let mut http = HttpClient::connect(addr).unwrap();
        for user in &users {
            let resp = http
                .get(&format!("/v1/users/{user}/recommendations?k=10"))
                .unwrap();
            assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
            let body = resp.json().unwrap();
            assert_eq!(body["source"], "personal", "{body}");
            assert_eq!(body["model_generation"], 1);
            assert_eq!(body["fallback"], false);
            let items = body["items"].as_array().unwrap();
            assert_eq!(items.len(), 10);
            let scores: Vec<f64> = items.iter().map(|i| i["score"].as_f64().unwrap()).collect();
            assert!(scores.windows(2).all(|w| w[0] >= w[1]), "sorted by score");
            for item in items {
                let id = item["item_id"].as_str().unwrap();
                assert!(
                    !seen[user].contains(id),
                    "{user} was recommended seen item {id}"
                );
            }
        }

        // A user the trainer never saw gets popular items, not an error.
        let body = http
            .get("/v1/users/never-seen/recommendations")
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(body["source"], "popular");
        assert_eq!(body["items"].as_array().unwrap().len(), 10);

        // `exclude` is honoured.
        let first = http
            .get(&format!("/v1/users/{}/recommendations?k=1", users[0]))
            .unwrap()
            .json()
            .unwrap()["items"][0]["item_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let again = http
            .get(&format!(
                "/v1/users/{}/recommendations?k=5&exclude={first}",
                users[0]
            ))
            .unwrap()
            .json()
            .unwrap();
        assert!(
            again["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["item_id"] != first.as_str())
        );

        for (path, status, needle) in [
            ("/v1/users/u1/recommendations?k=abc", 400, "k must be"),
            ("/v1/users/u1/recommendations?k=0", 400, "k must be"),
            ("/v1/users/u1/recommendations?k=101", 400, "k must be"),
            ("/v1/users/u1/recommendations?k=-3", 400, "k must be"),
            ("/v1/nope", 404, "no route"),
        ] {
            let resp = http.get(path).unwrap();
            assert_eq!(resp.status, status, "{path}");
            let body = resp.json().unwrap();
            assert!(
                body["error"].as_str().unwrap().contains(needle),
                "{path}: {body}"
            );
        }
        let resp = http
            .post_json("/v1/users/u1/recommendations", b"{}")
            .unwrap();
        assert_eq!(resp.status, 405);
        assert!(resp.json().unwrap()["error"].is_string());
        let health = http.get("/healthz").unwrap();
        assert_eq!(
            (health.status, health.json().unwrap()["status"].clone()),
            (200, "ok".into())
        );
    })
    .await
    .unwrap();

    // The five malformed messages are in the dead-letter topic with their provenance.
    let dlq: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .set("group.id", "dlq-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    dlq.subscribe(&["events-dlq"]).unwrap();
    let mut reasons = Vec::new();
    while reasons.len() < 5 {
        let msg = tokio::time::timeout(Duration::from_secs(30), dlq.recv())
            .await
            .expect("dead letters arrive")
            .unwrap();
        let headers = msg.headers().expect("dead letters carry headers");
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        assert!(header("source_offset").unwrap().parse::<i64>().is_ok());
        assert!(header("source_partition").is_some());
        reasons.push(header("reason").unwrap());
    }
    reasons.sort();
    assert!(reasons.iter().any(|r| r.contains("user_id")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("`ts`")), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("not valid JSON")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("events.max_future_s")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("events.max_weight")),
        "{reasons:?}"
    );
    pipeline.shutdown().await.unwrap();
}

/// Sends one message to `topic` and waits for the broker's acknowledgement.
async fn send_one(brokers: &str, topic: &str, key: &str, payload: &[u8]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
}

/// Polls `done` every 10 ms for up to 30 s.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_items_leave_index_and_popular_list_and_come_back() {
    // The generator's history is from January 2026: no bound on how old an event is.
    let mut cfg = Config {
        events: recsys_schemas::EventLimits::replay(),
        ..Config::default()
    };
    let kafka = EmbeddedKafka::start(&topics(&cfg, 2)).unwrap();
    let brokers = kafka.bootstrap_servers().to_owned();
    cfg.trainer.brokers = brokers.clone();
    cfg.trainer.batch_size = 256;
    cfg.trainer.publish_interval_ms = 100;
    cfg.serving.bind = "127.0.0.1:0".into();
    cfg.serving.workers = 1;
    let data = SynthConfig {
        users: 100,
        items: 60,
        events: 4_000,
        clusters: 4,
        seed: 3,
        ..SynthConfig::default()
    }
    .generate()
    .unwrap();
    let sent = {
        let (brokers, data) = (brokers.clone(), data.clone());
        let kafka_cfg = recsys_schemas::KafkaConfig::default();
        tokio::task::spawn_blocking(move || produce(&kafka_cfg, &brokers, "events", &data, 0, None))
            .await
            .unwrap()
            .unwrap()
    };
    let (writer, reader) = recsys::allinone::memory_store(cfg.trainer.history_len);
    let mut pipeline = Pipeline::start(&cfg, writer, reader).unwrap();
    pipeline
        .wait_for(sent as u64, Duration::from_secs(60))
        .await
        .unwrap();
    let catalog = pipeline.catalog.clone();
    eventually("popular list and items arrive", || {
        let c = catalog.load();
        !c.popular.is_empty() && c.item_count() == 60
    })
    .await;
    let top = catalog.load().popular[0].0.clone();
    let holds = |c: &recsys_serving::Catalog, item: &str| {
        c.ids
            .get(item)
            .is_some_and(|row| c.index.as_ref().unwrap().contains(u64::from(row)))
    };

    send_one(
        &brokers,
        "items",
        &top,
        format!(r#"{{"item_id":"{top}","hidden":true}}"#).as_bytes(),
    )
    .await;
    send_one(&brokers, "items", "x", br#"{"item_id":"x","hidden":"yes"}"#).await;
    eventually(
        "the hidden item leaves the index and the popular list",
        || {
            let c = catalog.load();
            !holds(&c, &top) && !c.popular.is_empty() && c.popular.iter().all(|(i, _)| *i != top)
        },
    )
    .await;
    assert_eq!(pipeline.stats.items_hidden.load(Ordering::Relaxed), 1);
    eventually("the bad item message is rejected", || {
        pipeline.stats.item_updates_rejected.load(Ordering::Relaxed) == 1
    })
    .await;

    // No answer contains it, whichever path produced the answer.
    let addr = pipeline.addr;
    let users: Vec<String> = data
        .test
        .iter()
        .map(|t| t.0.clone())
        .chain(["stranger".into()])
        .collect();
    let hidden = top.clone();
    tokio::task::spawn_blocking(move || {
        let mut http = HttpClient::connect(addr).unwrap();
        for user in &users {
            let body = http
                .get(&format!("/v1/users/{user}/recommendations?k=50"))
                .unwrap()
                .json()
                .unwrap();
            let items = body["items"].as_array().unwrap();
            assert!(!items.is_empty(), "{body}");
            assert!(
                items.iter().all(|i| i["item_id"] != hidden.as_str()),
                "{user}: {body}"
            );
        }
    })
    .await
    .unwrap();

    send_one(
        &brokers,
        "items",
        &top,
        format!(r#"{{"item_id":"{top}","hidden":false}}"#).as_bytes(),
    )
    .await;
    eventually("the item is back", || holds(&catalog.load(), &top)).await;
    pipeline.shutdown().await.unwrap();
}
