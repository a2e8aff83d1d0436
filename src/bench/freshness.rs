//! `recsys bench freshness`: how long from the broker's acknowledgement of an event until
//! (a) the user's vector in Redis has changed, (b) the user's recommendations over HTTP
//! have changed and no longer hold the item, (c) an item never seen before is returned by
//! `GET /v1/items/{id}/similar`. The trainer, one serving replica (both `recsys` child
//! processes, as deployed) and redis-server run apart; a broker (tansu, or the mock
//! cluster inside this process) between them; background events at fixed rates with the
//! probes among them.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::{RngExt, SeedableRng, rngs::StdRng};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::producer::{Producer, ThreadedProducer};
use recsys_schemas::contract::user_vector_key;
use recsys_schemas::{KafkaClient, KafkaConfig};
use recsys_testkit::{HttpClient, RedisServer, free_port};
use serde::Serialize;

use crate::allinone::topics;
use crate::config::Config;
use crate::embedded::{BrokerKind, TestBroker};

#[derive(Debug, Clone)]
pub struct FreshnessOptions {
    pub broker: BrokerKind,
    /// Background events per second, one run each.
    pub rates: Vec<u32>,
    pub seconds: u32,
    pub users: usize,
    pub items: usize,
    /// Probes per second (each a user probe and a new-item probe).
    pub probes_per_s: f64,
    pub seed: u64,
}

impl Default for FreshnessOptions {
    fn default() -> Self {
        Self {
            broker: BrokerKind::Tansu,
            rates: vec![1_000, 10_000],
            seconds: 60,
            users: 20_000,
            items: 5_000,
            probes_per_s: 2.0,
            seed: 7,
        }
    }
}

/// Percentiles of one measurement, ms; probes that timed out count at the timeout.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub n: usize,
    pub timeouts: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct RateReport {
    pub rate: u32,
    /// Background events actually sent per second.
    pub sent_per_s: f64,
    /// Events the trainer trained per second during the run (its `/metrics`): below
    /// `sent_per_s` when it cannot keep up.
    pub trained_per_s: f64,
    pub user: Latency,
    pub http: Latency,
    pub new_item: Latency,
    pub user_p50_ms: f64,
    pub user_p99_ms: f64,
    pub http_p99_ms: f64,
    pub new_item_p99_ms: f64,
    /// The trainer's consumer lag (all partitions), scraped every second: its largest,
    /// and its mean over the first and the last quarter of the run.
    pub lag_max: i64,
    pub lag_first_quarter: f64,
    pub lag_last_quarter: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FreshnessReport {
    pub broker: String,
    pub rates: Vec<RateReport>,
}

/// A probe gives up after this long.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(config: &Path, command: &str, log: &Path) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    Ok(Command::new(exe)
        .arg("--config")
        .arg(config)
        .arg(command)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()?)
}

fn get(addr: SocketAddr, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut client = HttpClient::connect(addr).ok()?;
    let r = client.get(path).ok()?;
    Some((r.status, r.body))
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() > deadline {
            bail!("{what} not within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Sum of `recsys_trainer_consumer_lag` over partitions, and events trained, from the
/// trainer's `/metrics`.
fn scrape(admin: SocketAddr) -> Option<(i64, f64)> {
    let (_, body) = get(admin, "/metrics")?;
    let text = String::from_utf8_lossy(&body);
    let mut lag = 0;
    let mut trained = 0.0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("recsys_trainer_consumer_lag{") {
            lag += rest.rsplit(' ').next()?.parse::<i64>().ok()?;
        } else if let Some(v) = line.strip_prefix("recsys_trainer_events_trained_total ") {
            trained = v.parse().ok()?;
        }
    }
    Some((lag, trained))
}

fn event(user: &str, item: &str) -> Vec<u8> {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(r#"{{"user_id":"{user}","item_id":"{item}","ts":{ts}}}"#).into_bytes()
}

fn latency(mut ms: Vec<f64>, timeouts: usize) -> Latency {
    ms.extend(std::iter::repeat_n(
        PROBE_TIMEOUT.as_secs_f64() * 1e3,
        timeouts,
    ));
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        ms.get(((ms.len().max(1) - 1) as f64 * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    Latency {
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: ms.last().copied().unwrap_or(f64::NAN),
        n: ms.len(),
        timeouts,
    }
}

/// What one probe measured, ms since the ack (None: timed out).
#[derive(Default)]
struct Probed {
    user: Option<f64>,
    http: Option<f64>,
    new_item: Option<f64>,
}

struct Rig {
    redis_url: String,
    http: SocketAddr,
    producer: FutureProducer,
    runtime: tokio::runtime::Handle,
}

impl Rig {
    fn send(&self, user: &str, item: &str) -> anyhow::Result<Instant> {
        let payload = event(user, item);
        let record = FutureRecord::to("events").key(user).payload(&payload);
        self.runtime
            .block_on(self.producer.send(record, Duration::from_secs(10)))
            .map_err(|(e, _)| anyhow::anyhow!("probe event: {e}"))?;
        Ok(Instant::now())
    }

    fn recommended(&self, user: &str) -> Option<Vec<String>> {
        let (status, body) = get(self.http, &format!("/v1/users/{user}/recommendations?k=10"))?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        Some(
            v["items"]
                .as_array()?
                .iter()
                .filter_map(|i| i["item_id"].as_str().map(str::to_owned))
                .collect(),
        )
    }

    /// One probe: `user` interacts with a catalog `item`, then with `fresh`, an item
    /// never seen before.
    fn probe(&self, user: &str, item: &str, fresh: &str) -> anyhow::Result<Probed> {
        let mut redis = redis::Client::open(self.redis_url.as_str())?.get_connection()?;
        let key = user_vector_key(1, user);
        let before: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query(&mut redis)?;
        let listed = self.recommended(user);
        // The probed item is one the user is being recommended, so applying the event
        // shows: the item leaves the list (exclusion of recent items).
        let item = listed
            .as_ref()
            .and_then(|l| l.first().cloned())
            .unwrap_or_else(|| item.to_owned());
        let item = item.as_str();
        let acked = self.send(user, item)?;
        let mut out = Probed::default();
        while acked.elapsed() < PROBE_TIMEOUT && (out.user.is_none() || out.http.is_none()) {
            if out.user.is_none() {
                let now: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query(&mut redis)?;
                if now.is_some() && now != before {
                    out.user = Some(acked.elapsed().as_secs_f64() * 1e3);
                }
            }
            if out.http.is_none()
                && let Some(list) = self.recommended(user)
                && Some(&list) != listed.as_ref()
                && !list.iter().any(|i| i == item)
            {
                out.http = Some(acked.elapsed().as_secs_f64() * 1e3);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let acked = self.send(user, fresh)?;
        let path = format!("/v1/items/{fresh}/similar?k=1");
        while acked.elapsed() < PROBE_TIMEOUT {
            if get(self.http, &path).is_some_and(|(s, _)| s == 200) {
                out.new_item = Some(acked.elapsed().as_secs_f64() * 1e3);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(out)
    }
}

/// Runs the benchmark: set-up, a warm-up stream, then each rate for `seconds`.
pub async fn freshness(opts: FreshnessOptions) -> anyhow::Result<FreshnessReport> {
    let redis = RedisServer::start();
    let broker = TestBroker::start(opts.broker, &topics(&Config::default(), 4)).await?;
    let brokers = broker.bootstrap_servers().to_owned();
    let dir = tempfile::tempdir()?;
    let (admin, http): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{}", free_port()).parse()?,
        format!("127.0.0.1:{}", free_port()).parse()?,
    );
    let config = dir.path().join("recsys.toml");
    std::fs::write(
        &config,
        format!(
            "[trainer]\nbrokers = \"{brokers}\"\nadmin_bind = \"{admin}\"\n\
             [serving]\nbind = \"{http}\"\n[serving.follow]\nbrokers = \"{brokers}\"\n\
             [store]\nredis_url = \"{}\"\n",
            redis.url()
        ),
    )?;
    let _children = Children(vec![
        spawn(&config, "train", &dir.path().join("train.log"))?,
        spawn(&config, "serve", &dir.path().join("serve.log"))?,
    ]);
    let load: ThreadedProducer<DefaultProducerContext> = KafkaConfig::default()
        .properties(KafkaClient::LoadProducer, &brokers, None)
        .into_iter()
        .collect::<ClientConfig>()
        .create()?;
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let warm = opts.users * 5;
    eprintln!(
        "freshness: warming up with {warm} events on {:?}",
        opts.broker
    );
    for n in 0..warm {
        let user = format!("u{}", n % opts.users);
        let item = format!("i{}", rng.random_range(0..opts.items));
        let payload = event(&user, &item);
        send_load(&load, &user, &payload)?;
    }
    load.flush(Duration::from_secs(30))?;
    let log = |name: &str| dir.path().join(name).display().to_string();
    wait_for("the trainer's warm-up", Duration::from_secs(300), || {
        scrape(admin).is_some_and(|(_, trained)| trained >= warm as f64 * 0.99)
    })
    .with_context(|| format!("see {}", log("train.log")))?;
    wait_for("the replica's readiness", Duration::from_secs(120), || {
        get(http, "/readyz").is_some_and(|(s, _)| s == 200)
    })
    .with_context(|| format!("see {}", log("serve.log")))?;

    let producer: FutureProducer = KafkaConfig::default()
        .properties(KafkaClient::EventProducer, &brokers, None)
        .into_iter()
        .collect::<ClientConfig>()
        .create()?;
    let rig = Arc::new(Rig {
        redis_url: redis.url(),
        http,
        producer,
        runtime: tokio::runtime::Handle::current(),
    });
    let load = Arc::new(load);
    let mut report = FreshnessReport {
        broker: format!("{:?}", opts.broker).to_lowercase(),
        rates: Vec::new(),
    };
    for &rate in &opts.rates {
        let (opts2, rig2, load2) = (opts.clone(), rig.clone(), load.clone());
        let row = tokio::task::spawn_blocking(move || run_rate(&opts2, rate, &rig2, &load2, admin))
            .await??;
        eprintln!(
            "rate {rate}/s: user p50 {:.0} ms p99 {:.0} ms, http p99 {:.0} ms, new item p99 {:.0} ms, \
             lag max {}, trained {:.0}/s",
            row.user.p50_ms,
            row.user.p99_ms,
            row.http.p99_ms,
            row.new_item.p99_ms,
            row.lag_max,
            row.trained_per_s
        );
        report.rates.push(row);
    }
    Ok(report)
}

fn send_load(
    load: &ThreadedProducer<DefaultProducerContext>,
    user: &str,
    payload: &[u8],
) -> anyhow::Result<()> {
    let mut record = BaseRecord::to("events").key(user).payload(payload);
    loop {
        match load.send(record) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                r,
            )) => {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => bail!("background event: {e}"),
        }
    }
}

/// One rate: background events paced in 1 ms ticks, probes every `1 / probes_per_s`,
/// the trainer's lag scraped every second.
fn run_rate(
    opts: &FreshnessOptions,
    rate: u32,
    rig: &Arc<Rig>,
    load: &Arc<ThreadedProducer<DefaultProducerContext>>,
    admin: SocketAddr,
) -> anyhow::Result<RateReport> {
    let stop = Arc::new(AtomicBool::new(false));
    let background = {
        let (stop, load, users, items, seed) = (
            stop.clone(),
            load.clone(),
            opts.users,
            opts.items,
            opts.seed + u64::from(rate),
        );
        std::thread::spawn(move || -> anyhow::Result<u64> {
            let mut rng = StdRng::seed_from_u64(seed);
            let started = Instant::now();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as u64;
                while sent < due {
                    let user = format!("u{}", rng.random_range(0..users));
                    let item = format!("i{}", rng.random_range(0..items));
                    send_load(&load, &user, &event(&user, &item))?;
                    sent += 1;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(sent)
        })
    };
    let lags = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut lags = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Some((lag, trained)) = scrape(admin) {
                    lags.push((Instant::now(), lag, trained));
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            lags
        })
    };
    let started = Instant::now();
    let every = Duration::from_secs_f64(1.0 / opts.probes_per_s.max(0.1));
    let mut probes = Vec::new();
    let mut n = 0usize;
    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x9e37);
    while started.elapsed() < Duration::from_secs(u64::from(opts.seconds)) {
        let (rig, user) = (rig.clone(), format!("u{}", rng.random_range(0..opts.users)));
        let item = format!("i{}", rng.random_range(0..opts.items));
        let fresh = format!("fresh-{rate}-{n}");
        probes.push(std::thread::spawn(move || rig.probe(&user, &item, &fresh)));
        n += 1;
        std::thread::sleep(every);
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let sent = background
        .join()
        .map_err(|_| anyhow::anyhow!("load thread"))??;
    let scraped = lags.join().map_err(|_| anyhow::anyhow!("lag thread"))?;
    let trained_per_s = match (scraped.first(), scraped.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => (b.2 - a.2) / (b.0 - a.0).as_secs_f64(),
        _ => f64::NAN,
    };
    let lags: Vec<i64> = scraped.iter().map(|s| s.1).collect();
    let (mut user, mut http, mut fresh) = (Vec::new(), Vec::new(), Vec::new());
    let mut timeouts = [0usize; 3];
    for p in probes {
        let p = p.join().map_err(|_| anyhow::anyhow!("probe thread"))??;
        for (slot, (got, into)) in [
            (p.user, &mut user),
            (p.http, &mut http),
            (p.new_item, &mut fresh),
        ]
        .into_iter()
        .enumerate()
        {
            match got {
                Some(ms) => into.push(ms),
                None => timeouts[slot] += 1,
            }
        }
    }
    let quarter = (lags.len() / 4).max(1);
    let mean = |v: &[i64]| v.iter().sum::<i64>() as f64 / v.len().max(1) as f64;
    let (user, http, new_item) = (
        latency(user, timeouts[0]),
        latency(http, timeouts[1]),
        latency(fresh, timeouts[2]),
    );
    Ok(RateReport {
        rate,
        sent_per_s: sent as f64 / elapsed,
        trained_per_s,
        user_p50_ms: user.p50_ms,
        user_p99_ms: user.p99_ms,
        http_p99_ms: http.p99_ms,
        new_item_p99_ms: new_item.p99_ms,
        user,
        http,
        new_item,
        lag_max: lags.iter().copied().max().unwrap_or(0),
        lag_first_quarter: mean(&lags[..quarter.min(lags.len())]),
        lag_last_quarter: mean(&lags[lags.len().saturating_sub(quarter)..]),
    })
}
