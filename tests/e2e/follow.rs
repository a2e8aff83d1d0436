//! Serving replicas following the `item-vectors` topic on a Kafka-protocol broker: start
//! from the newest valid base snapshot, replay only what came after it, apply updates and
//! tombstones in order, skip other generations, and report readiness on `/readyz`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use recsys::embedded::{BrokerKind, TestBroker};
use recsys_index::ids::IdMap;
use recsys_index::snapshot;
use recsys_index::store::MemoryUserStore;
use recsys_index::{IndexConfig, ItemIndex};
use recsys_schemas::KafkaConfig;
use recsys_serving::{
    AppState, CatalogHolder, FollowConfig, FollowStatus, ItemFollower, ServingConfig,
};
use recsys_testkit::HttpClient;
use recsys_trainer::sink::{ItemUpdate, ItemVectorSink, KafkaItemVectorSink};
use tokio_util::sync::CancellationToken;

const TOPICS: [(&str, i32); 3] = [("item-vectors", 2), ("item-popularity", 1), ("items", 1)];

fn vector(i: usize, version: f32) -> Vec<f32> {
    vec![version, i as f32 * 0.001, 0.0, 1.0]
}

fn updates(items: impl Iterator<Item = usize>, version: f32) -> Vec<ItemUpdate> {
    items
        .map(|i| ItemUpdate {
            item_id: format!("i{i}"),
            vector: vector(i, version),
        })
        .collect()
}

/// Writes a base snapshot holding `items` at `version`, as the trainer would.
fn write_snapshot(dir: &Path, items: &[(usize, f32)], offsets: &BTreeMap<i32, i64>) {
    let mut ids = IdMap::new();
    let mut rows = Vec::new();
    let mut vectors = Vec::new();
    for &(i, version) in items {
        rows.push(u64::from(ids.get_or_insert(&format!("i{i}"))));
        vectors.extend(vector(i, version));
    }
    let index = ItemIndex::build(4, &IndexConfig::default(), &rows, &vectors).unwrap();
    snapshot::write(dir, 1, &ids, &index, offsets, 5).unwrap();
}

/// A broker with the two topics, the trainer's item sink on it, and a snapshot directory.
async fn setup(broker: BrokerKind) -> (TestBroker, String, KafkaItemVectorSink, tempfile::TempDir) {
    let kafka = TestBroker::start(broker, &TOPICS).await.unwrap();
    let brokers = kafka.bootstrap_servers().to_owned();
    let sink = KafkaItemVectorSink::new(
        &kafka.kafka_config(),
        &brokers,
        "item-vectors",
        "item-popularity",
    )
    .unwrap();
    (kafka, brokers, sink, tempfile::tempdir().unwrap())
}

pub struct Replica {
    pub catalog: Arc<CatalogHolder>,
    pub status: Arc<FollowStatus>,
    cancel: CancellationToken,
    follower: tokio::task::JoinHandle<recsys_serving::Result<()>>,
    pub addr: std::net::SocketAddr,
    server: actix_web::dev::ServerHandle,
}

impl Replica {
    pub fn start(brokers: &str, snapshot_dir: &Path, apply_interval_ms: u64) -> Self {
        let follow = FollowConfig {
            brokers: brokers.to_owned(),
            snapshot_dir: snapshot_dir.to_str().unwrap().to_owned(),
            apply_interval_ms,
            ..FollowConfig::default()
        };
        Self::start_with(follow, Arc::new(MemoryUserStore::new()), 1)
    }

    /// A replica of generation 1 (or what `follow.models_dir` makes current) reading
    /// user vectors from `store`, with `workers` HTTP workers.
    pub fn start_with(follow: FollowConfig, store: Arc<MemoryUserStore>, workers: usize) -> Self {
        let catalog = Arc::new(CatalogHolder::new(1, IndexConfig::default()));
        let follower =
            ItemFollower::new(follow, KafkaConfig::default(), 1, catalog.clone()).unwrap();
        let status = follower.status();
        let cancel = CancellationToken::new();
        let follower = tokio::spawn(follower.run(cancel.clone()));
        let cfg = ServingConfig {
            bind: "127.0.0.1:0".into(),
            workers,
            ..ServingConfig::default()
        };
        let state = AppState::new(catalog.clone(), store, cfg, status.clone()).unwrap();
        let (server, addr) = recsys_serving::start(state).unwrap();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            catalog,
            status,
            cancel,
            follower,
            addr,
            server: handle,
        }
    }

    async fn readyz(&self) -> u16 {
        let addr = self.addr;
        tokio::task::spawn_blocking(move || HttpClient::connect(addr)?.get("/readyz"))
            .await
            .unwrap()
            .unwrap()
            .status
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.readyz().await != 200 {
            assert!(Instant::now() < deadline, "replica never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The stored vector of `item`, if the catalog holds it.
    fn vector(&self, item: &str) -> Option<Vec<f32>> {
        let c = self.catalog.load();
        let row = c.ids.get(item)?;
        c.index
            .as_ref()?
            .vector(u64::from(row))
            .map(<[f32]>::to_vec)
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        self.follower.await.unwrap().unwrap();
        self.server.stop(true).await;
    }
}

on_both_brokers!(
    replica_starts_from_snapshot_and_applies_only_later_deltas_in_order => from_snapshot
);

async fn from_snapshot(broker: BrokerKind) {
    let (_kafka, brokers, sink, dir) = setup(broker).await;

    // Before the snapshot: 400 items at version 1.
    sink.publish_items(1, updates(0..400, 1.0)).await.unwrap();
    let offsets = sink.end_offsets().await.unwrap();
    assert_eq!(offsets.values().sum::<i64>(), 400);
    let base: Vec<(usize, f32)> = (0..400).map(|i| (i, 1.0)).collect();
    write_snapshot(dir.path(), &base, &offsets);

    // After it: updates, new items, tombstones, a popular list, and a vector of another
    // generation that must not replace i1's.
    sink.publish_items(1, updates((0..50).chain(400..450), 2.0))
        .await
        .unwrap();
    let gone: Vec<String> = (50..60).map(|i| format!("i{i}")).collect();
    sink.remove_items(gone.clone()).await.unwrap();
    sink.publish_popular(1, vec![("i7".into(), 1.0), ("i8".into(), 0.5)])
        .await
        .unwrap();
    sink.publish_items(2, updates(1..2, 9.0)).await.unwrap();
    // An item removed and then re-added ends up present, one added then removed absent.
    sink.remove_items(vec!["i70".to_owned()]).await.unwrap();
    sink.publish_items(1, updates(70..71, 3.0)).await.unwrap();
    sink.publish_items(1, updates(460..461, 3.0)).await.unwrap();
    sink.remove_items(vec!["i460".to_owned()]).await.unwrap();

    // Categories come from the items topic; the last message per item wins.
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for (item, json) in [
        ("i1", r#"{"item_id":"i1","categories":["a"]}"#),
        ("i2", r#"{"item_id":"i2","categories":["a","c"]}"#),
        ("i1", r#"{"item_id":"i1","categories":["b"]}"#),
    ] {
        producer
            .send(
                rdkafka::producer::FutureRecord::to("items")
                    .key(item)
                    .payload(json),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }

    // A long apply interval keeps the first batch back: not ready until it is applied.
    let replica = Replica::start(&brokers, dir.path(), 2_000);
    assert_eq!(replica.readyz().await, 503);
    replica.wait_ready().await;

    assert_eq!(replica.status.snapshot_seq.load(Ordering::Relaxed), 0);
    let c = replica.catalog.load();
    assert!(c.in_category("i1", "b") && !c.in_category("i1", "a"));
    assert!(c.in_category("i2", "a") && c.in_category("i2", "c"));
    // 50 updates + 50 new + 10 tombstones + i70 + i460, each counted once: nothing from
    // before the snapshot was replayed.
    assert_eq!(replica.status.applied.load(Ordering::Relaxed), 112);
    assert_eq!(replica.status.other_generation.load(Ordering::Relaxed), 1);
    let catalog = replica.catalog.load();
    // 400 - 10 tombstoned + 50 new; i70 re-added, i460 added and removed.
    assert_eq!(catalog.item_count(), 440);
    assert_eq!(replica.vector("i0"), Some(vector(0, 2.0)));
    assert_eq!(replica.vector("i1"), Some(vector(1, 2.0)));
    assert_eq!(replica.vector("i100"), Some(vector(100, 1.0)));
    assert_eq!(replica.vector("i420"), Some(vector(420, 2.0)));
    assert_eq!(replica.vector("i70"), Some(vector(70, 3.0)));
    assert_eq!(replica.vector("i55"), None);
    assert_eq!(replica.vector("i460"), None);
    assert_eq!(
        catalog.popular.as_slice(),
        &[("i7".to_owned(), 1.0), ("i8".to_owned(), 0.5)]
    );
    // Removed items are never returned by a search, however deep.
    let index = catalog.index.as_ref().unwrap();
    let hits = index.search(&[1.0, 0.0, 0.0, 0.0], 1_000).unwrap();
    assert_eq!(hits.len(), catalog.item_count());
    for (row, _) in hits {
        let item = catalog.ids.id(row as u32).unwrap();
        assert!(!gone.iter().any(|g| g == item) && item != "i460", "{item}");
    }

    // Live: a change published now becomes searchable.
    sink.publish_items(1, updates(2..3, 5.0)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while replica.vector("i2") != Some(vector(2, 5.0)) {
        assert!(Instant::now() < deadline, "live delta never applied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Set (from -1) once a published vector was applied: its publish-to-searchable time.
    assert!(replica.status.last_delay_ms.load(Ordering::Relaxed) >= 0);
    replica.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_newest_snapshot_falls_back_to_the_older_one() {
    let (_kafka, brokers, sink, dir) = setup(BrokerKind::Mock).await;

    sink.publish_items(1, updates(0..100, 1.0)).await.unwrap();
    let first = sink.end_offsets().await.unwrap();
    write_snapshot(
        dir.path(),
        &(0..100).map(|i| (i, 1.0)).collect::<Vec<_>>(),
        &first,
    );
    sink.publish_items(1, updates(0..30, 2.0)).await.unwrap();
    let second = sink.end_offsets().await.unwrap();
    let state: Vec<(usize, f32)> = (0..100)
        .map(|i| (i, if i < 30 { 2.0 } else { 1.0 }))
        .collect();
    write_snapshot(dir.path(), &state, &second);

    // Flip a byte in the newest snapshot's FAISS file.
    let (_, seq, newest) = snapshot::list(dir.path()).unwrap().remove(0);
    assert_eq!(seq, 1);
    let path = newest.join("index.faiss");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x5a;
    std::fs::write(&path, bytes).unwrap();

    let replica = Replica::start(&brokers, dir.path(), 50);
    replica.wait_ready().await;
    assert_eq!(replica.status.snapshot_seq.load(Ordering::Relaxed), 0);
    // The older snapshot plus the 30 updates after it: the same state as the lost one.
    assert_eq!(replica.status.applied.load(Ordering::Relaxed), 30);
    assert_eq!(replica.catalog.load().item_count(), 100);
    assert_eq!(replica.vector("i5"), Some(vector(5, 2.0)));
    assert_eq!(replica.vector("i50"), Some(vector(50, 1.0)));
    replica.stop().await;
}
