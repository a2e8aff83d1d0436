//! `recsys demo`: the whole pipeline on one machine with nothing installed. An embedded
//! Kafka-protocol broker, a synthetic stream produced through a real rdkafka producer, the
//! online trainer and the HTTP server in this process, and the API queried over HTTP for
//! every evaluated user, so the reported recall and latency are those of the real path.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use recsys_engine::metrics::{Mean, recall_at_k};
use recsys_engine::popularity::Popularity;
use recsys_engine::synth::{SynthConfig, SynthData};
use recsys_index::ids::IdMap;
use recsys_schemas::{KafkaClient, KafkaConfig};
use serde::Serialize;

use crate::allinone::{Pipeline, memory_store, topics};
use crate::config::Config;
use crate::embedded::EmbeddedKafka;
use recsys_testkit::HttpClient;

/// Scale of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub users: usize,
    pub items: usize,
    pub events: usize,
    pub seed: u64,
    /// Users whose recommendations are requested over HTTP and evaluated.
    pub queries: usize,
    /// Deliberately malformed messages mixed into the stream.
    pub malformed: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            users: 5_000,
            items: 2_000,
            events: 300_000,
            seed: 42,
            queries: 2_000,
            malformed: 3,
        }
    }
}

/// What the demo measured.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// Events trained on.
    pub events: u64,
    pub events_rejected: u64,
    /// Events per second of training-step time.
    pub train_events_per_s: f64,
    /// Prequential HitRate@10 / NDCG@10 over the trainer's last scored events (each
    /// ranked against all items before the model trained on it).
    pub prequential_hr_at_10: f64,
    pub prequential_ndcg_at_10: f64,
    /// Events per second from the first consumed message to the last trained batch.
    pub ingest_events_per_s: f64,
    pub recall_at_10: f64,
    pub popularity_recall_at_10: f64,
    pub http_p50_ms: f64,
    pub http_p99_ms: f64,
    pub queries: usize,
    /// Recommended items among the user's last `trainer.history_len` distinct items, the
    /// ones serving promises to exclude (must be 0).
    pub seen_items_returned: usize,
    /// Recommended items the user interacted with before those: only users with more
    /// distinct items than `trainer.history_len` can get them.
    pub seen_beyond_history: usize,
    pub sources: HashMap<String, usize>,
    #[serde(skip)]
    pub samples: Vec<String>,
}

pub async fn run(cfg: Config, opts: DemoOptions) -> anyhow::Result<DemoReport> {
    let synth = SynthConfig {
        users: opts.users,
        items: opts.items,
        events: opts.events,
        seed: opts.seed,
        ..SynthConfig::default()
    };
    let data = synth.generate().map_err(anyhow::Error::msg)?;
    eprintln!(
        "generated {} training events for {} users x {} items (seed {}), {} held out",
        data.train.len(),
        opts.users,
        opts.items,
        opts.seed,
        data.test.iter().map(|t| t.1.len()).sum::<usize>()
    );

    let kafka = EmbeddedKafka::start(&topics(&cfg, 4))?;
    let mut cfg = cfg;
    // The generator's history starts on 2026-01-01: a replay, with no bound on age.
    cfg.events = recsys_schemas::EventLimits::replay();
    cfg.trainer.brokers = kafka.bootstrap_servers().to_owned();
    cfg.serving.bind = "127.0.0.1:0".into();
    eprintln!("embedded Kafka broker at {}", cfg.trainer.brokers);

    let (writer, reader) = memory_store(cfg.trainer.history_len);
    let mut pipeline = Pipeline::start(&cfg, writer, reader)?;
    // The stream is produced while the trainer consumes it, at most 50k messages ahead.
    let producer = {
        let (brokers, topic) = (cfg.trainer.brokers.clone(), cfg.trainer.topic.clone());
        let (data, malformed, stats) = (data.clone(), opts.malformed, pipeline.stats.clone());
        tokio::task::spawn_blocking(move || {
            let consumed = move || stats.messages_done();
            let pace = Pace {
                max_lag: 50_000,
                consumed: &consumed,
            };
            produce(
                &KafkaConfig::default(),
                &brokers,
                &topic,
                &data,
                malformed,
                Some(pace),
            )
        })
    };
    let produced = producer.await??;
    let ingest_secs = pipeline
        .wait_for(produced as u64, Duration::from_secs(600))
        .await?;
    let model = pipeline.stop_trainer().await?;
    pipeline
        .wait_for_catalog(&model, Duration::from_secs(60))
        .await?;
    let stats = pipeline.stats.clone();
    let trained = stats.events_trained.load(Ordering::Relaxed);
    eprintln!(
        "trained {trained} events in {ingest_secs:.2}s wall ({:.0} events/s in training steps); \
         {} rejected to the dead-letter topic; last batch loss {:.3}; prequential \
         HR@10 {:.3}, NDCG@10 {:.3} over the last {} ranked events",
        stats.train_events_per_s(),
        stats.events_rejected.load(Ordering::Relaxed),
        stats.last_loss(),
        stats.prequential().0,
        stats.prequential().1,
        stats
            .prequential_scored
            .load(Ordering::Relaxed)
            .min(cfg.trainer.prequential_window as u64)
    );
    let addr = pipeline.addr;

    let eval_users: Vec<usize> = spread(data.test.len(), opts.queries);
    let eval = {
        let data = data.clone();
        let users = eval_users.clone();
        let history_len = cfg.trainer.history_len;
        tokio::task::spawn_blocking(move || query_all(addr, &data, &users, history_len)).await??
    };
    let popularity_recall = popularity_recall(&data, &eval_users);
    pipeline.shutdown().await?;
    drop(kafka);

    let mut lat = eval.latencies_ms.clone();
    lat.sort_by(f64::total_cmp);
    let (prequential_hr_at_10, prequential_ndcg_at_10) = stats.prequential();
    Ok(DemoReport {
        prequential_hr_at_10,
        prequential_ndcg_at_10,
        events: trained,
        events_rejected: stats.events_rejected.load(Ordering::Relaxed),
        train_events_per_s: stats.train_events_per_s(),
        ingest_events_per_s: trained as f64 / ingest_secs,
        recall_at_10: eval.recall.value(),
        popularity_recall_at_10: popularity_recall,
        http_p50_ms: percentile(&lat, 0.50),
        http_p99_ms: percentile(&lat, 0.99),
        queries: lat.len(),
        seen_items_returned: eval.seen_returned,
        seen_beyond_history: eval.seen_beyond_history,
        sources: eval.sources,
        samples: eval.samples,
    })
}

/// Keeps a producer at most `max_lag` messages ahead of a consumer, as a live stream is.
/// librdkafka's mock broker needs it too: it keeps only the newest 5 MB (and 100k
/// messages) of each partition, so a stream produced far ahead of its consumer loses its
/// oldest messages.
pub struct Pace<'a> {
    pub max_lag: u64,
    /// Messages the consumer has dealt with so far.
    pub consumed: &'a (dyn Fn() -> u64 + Sync),
}

/// Sends the training stream (keyed by user) through a real producer, plus `malformed`
/// broken messages spread through it, paced by `pace` when given. Returns the number of
/// messages sent.
pub fn produce(
    kafka: &KafkaConfig,
    brokers: &str,
    topic: &str,
    data: &SynthData,
    malformed: usize,
    pace: Option<Pace<'_>>,
) -> anyhow::Result<usize> {
    let producer: ThreadedProducer<DefaultProducerContext> = kafka
        .properties(KafkaClient::LoadProducer, brokers, None)
        .into_iter()
        .collect::<ClientConfig>()
        .create()?;
    let broken: Vec<(&str, Vec<u8>)> = [
        r#"{"user_id":"","item_id":"i1"}"#,
        "this is not json",
        r#"{"user_id":"u1","item_id":"i1","ts":1.5}"#,
        // Valid JSON out of bounds: a time in microseconds, a weight that would be the
        // whole batch's loss.
        r#"{"user_id":"u1","item_id":"i1","ts":1767225600000000}"#,
        r#"{"user_id":"u1","item_id":"i1","weight":1e30}"#,
    ]
    .iter()
    .cycle()
    .take(malformed)
    .map(|s| ("bad", s.as_bytes().to_vec()))
    .collect();
    let mut sent = 0;
    let step = (data.train.len() / (malformed + 1)).max(1);
    let mut broken = broken.into_iter();
    for (n, event) in data.train.iter().enumerate() {
        if let Some(p) = &pace {
            let mut last = ((p.consumed)(), Instant::now());
            while sent as u64 > (p.consumed)() + p.max_lag {
                let now = (p.consumed)();
                if now != last.0 {
                    last = (now, Instant::now());
                } else if last.1.elapsed() > Duration::from_secs(120) {
                    anyhow::bail!("the consumer made no progress for 120 s at {now} messages");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        send(&producer, topic, &event.user_id, &event.to_json())?;
        sent += 1;
        if n % step == step - 1
            && let Some((key, payload)) = broken.next()
        {
            send(&producer, topic, key, &payload)?;
            sent += 1;
        }
    }
    for (key, payload) in broken {
        send(&producer, topic, key, &payload)?;
        sent += 1;
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(sent)
}

fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: &str,
    payload: &[u8],
) -> anyhow::Result<()> {
    let mut record = BaseRecord::to(topic).key(key).payload(payload);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

struct Evaluation {
    recall: Mean,
    latencies_ms: Vec<f64>,
    seen_returned: usize,
    seen_beyond_history: usize,
    sources: HashMap<String, usize>,
    samples: Vec<String>,
}

/// Requests recommendations for each user over HTTP and scores them against the users'
/// held-out future.
fn query_all(
    addr: SocketAddr,
    data: &SynthData,
    users: &[usize],
    history_len: usize,
) -> anyhow::Result<Evaluation> {
    let mut seen: HashMap<&str, HashSet<&str>> = HashMap::new();
    // Each user's last `history_len` distinct items, newest last in stream order.
    let mut recent: HashMap<&str, Vec<&str>> = HashMap::new();
    for e in &data.train {
        seen.entry(&e.user_id).or_default().insert(&e.item_id);
        let r = recent.entry(&e.user_id).or_default();
        r.retain(|i| *i != e.item_id);
        r.push(&e.item_id);
        if r.len() > history_len {
            r.remove(0);
        }
    }
    let mut client = HttpClient::connect(addr)?;
    let mut eval = Evaluation {
        recall: Mean::default(),
        latencies_ms: Vec::with_capacity(users.len()),
        seen_returned: 0,
        seen_beyond_history: 0,
        sources: HashMap::new(),
        samples: Vec::new(),
    };
    for (n, &u) in users.iter().enumerate() {
        let (user, future) = &data.test[u];
        let started = Instant::now();
        let resp = client.get(&format!("/v1/users/{user}/recommendations?k=10"))?;
        eval.latencies_ms
            .push(started.elapsed().as_secs_f64() * 1e3);
        if resp.status != 200 {
            bail!(
                "GET recommendations for {user}: {} {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            );
        }
        let body = resp.json()?;
        let items: Vec<String> = body["items"]
            .as_array()
            .context("items")?
            .iter()
            .filter_map(|i| i["item_id"].as_str().map(str::to_owned))
            .collect();
        let source = body["source"].as_str().unwrap_or("?").to_owned();
        *eval.sources.entry(source.clone()).or_default() += 1;
        let user_seen = seen.get(user.as_str());
        let user_recent = recent.get(user.as_str());
        for item in &items {
            if user_recent.is_some_and(|r| r.contains(&item.as_str())) {
                eval.seen_returned += 1;
            } else if user_seen.is_some_and(|s| s.contains(item.as_str())) {
                eval.seen_beyond_history += 1;
            }
        }
        let relevant: HashSet<String> = future.iter().cloned().collect();
        if let Some(r) = recall_at_k(&items, &relevant, 10) {
            eval.recall.push(r);
        }
        if n < 3 {
            eval.samples.push(describe(data, u, &items, &source));
        }
    }
    Ok(eval)
}

/// One line showing a user's planted taste next to what they were recommended.
fn describe(data: &SynthData, u: usize, items: &[String], source: &str) -> String {
    let cluster = |item: &str| -> String {
        item[1..]
            .parse::<usize>()
            .ok()
            .and_then(|i| data.item_cluster.get(i))
            .map_or("?".into(), |c| format!("c{c}"))
    };
    let likes: Vec<String> = data.user_clusters[u]
        .iter()
        .map(|(c, w)| format!("c{c}:{w:.2}"))
        .collect();
    let recs: Vec<String> = items
        .iter()
        .take(6)
        .map(|i| format!("{i}({})", cluster(i)))
        .collect();
    let (user, future) = &data.test[u];
    format!(
        "{user} likes [{}] -> {source}: {} | held out: {}",
        likes.join(" "),
        recs.join(" "),
        future
            .iter()
            .map(|i| format!("{i}({})", cluster(i)))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// Recall@10 of most-popular-unseen for the evaluated users.
fn popularity_recall(data: &SynthData, users: &[usize]) -> f64 {
    let mut ids = IdMap::new();
    let mut pop = Popularity::new(f64::INFINITY);
    let mut seen: HashMap<&str, HashSet<u32>> = HashMap::new();
    for e in &data.train {
        let row = ids.get_or_insert(&e.item_id);
        pop.add(row, e.weight, e.ts);
        seen.entry(&e.user_id).or_default().insert(row);
    }
    let empty = HashSet::new();
    let mut mean = Mean::default();
    for &u in users {
        let (user, future) = &data.test[u];
        let top: Vec<String> = pop
            .top_k(10, seen.get(user.as_str()).unwrap_or(&empty))
            .iter()
            .filter_map(|(r, _)| ids.id(*r).map(str::to_owned))
            .collect();
        let relevant: HashSet<String> = future.iter().cloned().collect();
        if let Some(r) = recall_at_k(&top, &relevant, 10) {
            mean.push(r);
        }
    }
    mean.value()
}

/// Up to `n` indices spread evenly over `0..len`.
fn spread(len: usize, n: usize) -> Vec<usize> {
    if n >= len {
        return (0..len).collect();
    }
    (0..n).map(|k| k * len / n).collect()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx]
}

impl DemoReport {
    /// The human-readable report.
    pub fn print(&self) {
        println!("events trained           {}", self.events);
        println!("events rejected (DLQ)    {}", self.events_rejected);
        println!(
            "training throughput      {:.0} events/s (training steps)",
            self.train_events_per_s
        );
        println!(
            "end-to-end ingest        {:.0} events/s (consume + train + publish)",
            self.ingest_events_per_s
        );
        println!("Recall@10, learned MF    {:.4}", self.recall_at_10);
        println!(
            "Recall@10, popularity    {:.4}",
            self.popularity_recall_at_10
        );
        println!(
            "HTTP latency             p50 {:.3} ms, p99 {:.3} ms over {} queries",
            self.http_p50_ms, self.http_p99_ms, self.queries
        );
        println!("answer sources           {:?}", self.sources);
        println!(
            "seen items returned      {} (and {} older than the last trainer.history_len \
             distinct items of their users)",
            self.seen_items_returned, self.seen_beyond_history
        );
        println!("sample recommendations (item(cluster)):");
        for s in &self.samples {
            println!("  {s}");
        }
    }

    /// The one-line JSON summary.
    pub fn json_line(&self) -> String {
        serde_json::json!({
            "events": self.events,
            "train_events_per_s": round(self.train_events_per_s, 1),
            "recall_at_10": round(self.recall_at_10, 4),
            "popularity_recall_at_10": round(self.popularity_recall_at_10, 4),
            "http_p50_ms": round(self.http_p50_ms, 3),
            "http_p99_ms": round(self.http_p99_ms, 3),
            "seen_items_returned": self.seen_items_returned,
            "prequential_hr_at_10": round(self.prequential_hr_at_10, 4),
            "prequential_ndcg_at_10": round(self.prequential_ndcg_at_10, 4),
        })
        .to_string()
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}
