//! Fixed-rate load from `oha` processes, and the run's figures from their request logs:
//! percentiles over the measured window, errors, CPU and the server's own time.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::procfs::CpuSample;
use super::runs::ServeRun;
use super::scrape::{ServerTimes, shares_within};

/// Offered requests per second one `oha` process releases evenly. oha paces with tokio's
/// timer, which ticks every millisecond: above 1,000 req/s one process releases
/// `rate / 1000` requests at once on every tick, a synchronised burst a fixed rate does
/// not mean. At 5,000 req/s, `bench serve --generators 1` then `--generators 0`, two runs
/// each: one process HTTP p50 0.94 and 0.88 ms (p99 6.0, 4.0), five processes at 1,000
/// each 0.72 and 0.53 ms (p99 2.6, 2.1; the highest of the five each time).
pub const RATE_PER_GENERATOR: u32 = 1_000;

/// Runtime threads of each `oha` process (its default is one per core). Five processes of
/// two threads each at 5,000 req/s queued on the two cores behind one another: in an
/// alternated A/B (8 runs each, `bench serve --rate 5000 --repeat 2`), one thread each
/// cut oha's CPU from 0.45–0.52 to 0.38–0.45 cores and its threads' run-queue wait from
/// 222–416 to 63–116 µs per request; the HTTP p50 stayed where it was (0.57–1.03 ms
/// against 0.53–0.92). 1,000 req/s over 8 connections is light work for one thread.
const GENERATOR_THREADS: u32 = 1;

/// Pause between starting two `oha` processes of one run. Started together, their
/// start-ups (runtimes, 8 connections each) stalled the first requests of every process
/// by 110–160 ms (p99 over 100 ms); 200 ms apart, each starts while the others run.
const GENERATOR_STAGGER: Duration = Duration::from_millis(200);

/// `rate` requests per second against `target` (oha's arguments naming the URLs: one URL,
/// or `--urls-from-file <file>`) for `seconds` at full rate, from
/// `generators` `oha` processes (crates.io: `cargo install oha`) of `rate / generators`
/// each (0: one per [`RATE_PER_GENERATOR`]) over `connections` connections each, started
/// [`GENERATOR_STAGGER`] apart; all of them run on together at the full rate for
/// [`WARM_UP`], the measured `seconds` and [`COOL_DOWN`], and stop together.
///
/// The run's figures are those of the measured window, the whole rate's steady state:
/// its percentiles over every request released in it, all processes' together (from the
/// request log each writes, `--db-url`), its throughput the requests answered of those,
/// its CPU split read at the window's two ends. Errors are counted over the whole run
/// (from the processes' JSON summaries). The percentiles of every logged request, ramp
/// and ends included, are kept as `whole_run_p99_ms`.
pub(super) fn load(
    target: &[String],
    rate: u32,
    seconds: u32,
    connections: u32,
    generators: u32,
    redis_pid: u32,
    server: std::net::SocketAddr,
) -> anyhow::Result<ServeRun> {
    let generators = if generators == 0 {
        rate.div_ceil(RATE_PER_GENERATOR)
    } else {
        generators
    }
    .clamp(1, rate.max(1));
    let logs = tempfile::tempdir().context("a directory for oha's request logs")?;
    let log = |g: u32| logs.path().join(format!("oha-{g}.db"));
    let stagger = GENERATOR_STAGGER.as_secs_f64();
    let (warm_up, cool_down) = (WARM_UP.as_secs_f64(), COOL_DOWN.as_secs_f64());
    let measured = f64::from(seconds);
    // How long process `g` offers load: until the last one has run the whole window.
    let duration =
        |g: u32| warm_up + measured + cool_down + f64::from(generators - 1 - g) * stagger;
    let mut children = Generators(Vec::new());
    let mut last_started = Instant::now();
    for g in 0..generators {
        if g > 0 {
            std::thread::sleep(GENERATOR_STAGGER);
        }
        // Split the rate as evenly as integers allow.
        let share = rate / generators + u32::from(g < rate % generators);
        last_started = Instant::now();
        let child = std::process::Command::new("oha")
            .args([
                "-z",
                &format!("{:.2}s", duration(g)),
                "-q",
                &share.to_string(),
                "-c",
                &connections.to_string(),
                "--no-tui",
                "--worker-threads",
                &GENERATOR_THREADS.to_string(),
                // Latency from each request's release, not its actual send: no
                // coordinated omission when the server falls behind.
                "--latency-correction",
                "--output-format",
                "json",
            ])
            .arg("--db-url")
            .arg(log(g))
            .args(target)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running oha (install it with `cargo install oha`)")?;
        children.0.push(child);
    }
    // Where the CPU went, read at the measured window's two ends.
    let sleep_until =
        |at: Instant| std::thread::sleep(at.saturating_duration_since(Instant::now()));
    let pids: Vec<u32> = children.0.iter().map(std::process::Child::id).collect();
    sleep_until(last_started + WARM_UP);
    let before = CpuSample::take(redis_pid, &pids);
    let server_before = ServerTimes::read(server);
    sleep_until(last_started + WARM_UP + Duration::from_secs(seconds.into()));
    let cpu = before.and_then(|b| b.cores_since(redis_pid, &pids));
    let server_between = server_before.zip(ServerTimes::read(server));
    let server_within_ms = server_between
        .as_ref()
        .map_or_else(Vec::new, |(before, after)| {
            shares_within(&before.request_buckets, &after.request_buckets)
        });
    let server_mean_ms = server_between.map(|(before, after)| after.means_since(&before));
    let mut errors = 0;
    while !children.0.is_empty() {
        let child = children.0.remove(0);
        let out = child.wait_with_output().context("waiting for oha")?;
        if !out.status.success() {
            bail!("oha failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        errors += oha_errors(&out.stdout)?;
    }
    let requests = (0..generators)
        .map(|g| request_log(&log(g)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let window_ends: Vec<f64> = (0..generators).map(|g| duration(g) - cool_down).collect();
    let (window, whole) = window_latencies(&requests, &window_ends, measured);
    Ok(ServeRun {
        offered_rps: rate,
        generators,
        rps: window.len() as f64 / measured,
        p50_ms: nearest_rank(&window, 500),
        p99_ms: nearest_rank(&window, 990),
        p999_ms: nearest_rank(&window, 999),
        whole_run_p99_ms: nearest_rank(&whole, 990),
        errors,
        bare_search_p50_ms: f64::NAN,
        bare_redis_p50_ms: f64::NAN,
        overhead_ratio: f64::NAN,
        cpu,
        server_within_ms,
        server_mean_ms,
    })
}

/// Latencies, ms, sorted, of the requests of a run's processes (`requests[g]`, as
/// [`request_log`] reads them): those released in the measured window, the `measured`
/// seconds before `window_ends[g]` on process g's clock (each clock starts with its
/// process's load, and the processes end together), and all of them.
fn window_latencies(
    requests: &[Vec<(f64, f64)>],
    window_ends: &[f64],
    measured: f64,
) -> (Vec<f64>, Vec<f64>) {
    let (mut window, mut whole) = (Vec::new(), Vec::new());
    for (process, &end) in requests.iter().zip(window_ends) {
        for &(released, ms) in process {
            if (end - measured..end).contains(&released) {
                window.push(ms);
            }
            whole.push(ms);
        }
    }
    window.sort_by(f64::total_cmp);
    whole.sort_by(f64::total_cmp);
    (window, whole)
}

/// Full-rate lead-in before a run's measured window. The last `oha` to start reads the
/// list of 100,000 URLs and opens its connections on the cores the others are loading:
/// in two runs at 5,000 req/s, 16% of the requests released within 125 ms of the last
/// start were slower than the run's p99, against at most 4% in any later quarter-second.
const WARM_UP: Duration = Duration::from_millis(500);

/// Full-rate tail after the measured window: the processes stop within some tens of ms
/// of one another, and the first to stop writes its request log while the others still
/// send (in the same two runs, 13% of the requests released in the last 125 ms were
/// slower than the run's p99).
const COOL_DOWN: Duration = Duration::from_millis(250);

/// The requests one `oha` process answered, from its request log (`--db-url`, an SQLite
/// table `oha` with one row per answered request): when each was released, seconds on
/// the process's clock (with `--latency-correction`, its scheduled release), and its
/// latency in ms (`duration`, which then runs from that release).
fn request_log(path: &std::path::Path) -> anyhow::Result<Vec<(f64, f64)>> {
    let db =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("oha's request log {}", path.display()))?;
    let mut query = db
        .prepare("SELECT COALESCE(start_latency_correction, start), duration FROM oha")
        .with_context(|| format!("oha's request log {}", path.display()))?;
    let rows = query.query_map([], |row| {
        Ok((row.get::<_, f64>(0)?, row.get::<_, f64>(1)? * 1e3))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The value at `per_mille`/1000 of `sorted` by nearest rank: the smallest with at least
/// that share of all the values at or below it (NaN for none).
fn nearest_rank(sorted: &[f64], per_mille: usize) -> f64 {
    let rank = (sorted.len() * per_mille).div_ceil(1000).max(1);
    sorted.get(rank - 1).copied().unwrap_or(f64::NAN)
}

/// The `oha` processes of one run; those still running when it is dropped (a run that
/// failed half-way) are killed rather than left loading the next run.
struct Generators(Vec<std::process::Child>);

impl Drop for Generators {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The errors of one `oha --output-format json` summary: answers other than 200, and
/// connection errors. (Latencies come from the request logs, throughput from the window.)
fn oha_errors(json: &[u8]) -> anyhow::Result<u64> {
    let v: serde_json::Value = serde_json::from_slice(json).context("oha's JSON summary")?;
    let codes = v["statusCodeDistribution"].as_object();
    let ok = codes
        .and_then(|c| c.get("200"))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let all: u64 = codes
        .map(|c| c.values().filter_map(serde_json::Value::as_u64).sum())
        .unwrap_or(0);
    // Requests still in flight when the run's time is up are cut off by oha itself
    // ("aborted due to deadline"): not the server's errors.
    let conn_errors: u64 = v["errorDistribution"]
        .as_object()
        .map(|e| {
            e.iter()
                .filter(|(kind, _)| !kind.contains("aborted due to deadline"))
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
        .unwrap_or(0);
    if conn_errors > 0 || all > ok {
        eprintln!(
            "  non-200 answers {:?}, errors {}",
            v["statusCodeDistribution"], v["errorDistribution"]
        );
    }
    Ok(all - ok + conn_errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oha_summary_counts_non_200_and_connection_errors_but_not_the_deadline() {
        let json = br#"{
            "summary": {"requestsPerSec": 999.5},
            "latencyPercentiles": {"p50": 0.0005, "p99": 0.002, "p99.9": 0.004},
            "statusCodeDistribution": {"200": 990, "503": 7},
            "errorDistribution": {"aborted due to deadline": 12, "connection closed": 3}
        }"#;
        assert_eq!(oha_errors(json).unwrap(), 10);
        assert!(oha_errors(b"not json").is_err());
    }

    #[test]
    fn run_percentiles_come_from_every_generators_request_log_in_the_window() {
        let dir = tempfile::tempdir().unwrap();
        // oha 1.16's request log: one row per answered request, times in seconds on the
        // process's clock, the scheduled release NULL without `--latency-correction`.
        let write = |name: &str, rows: &[(Option<f64>, f64, f64)]| {
            let path = dir.path().join(name);
            let db = rusqlite::Connection::open(&path).unwrap();
            db.execute_batch(
                "CREATE TABLE oha (url TEXT NOT NULL, start REAL NOT NULL, \
                 start_latency_correction REAL, end REAL NOT NULL, duration REAL NOT NULL, \
                 status INTEGER NOT NULL, len_bytes INTEGER NOT NULL, run INTEGER NOT NULL)",
            )
            .unwrap();
            for &(scheduled, start, duration) in rows {
                db.execute(
                    "INSERT INTO oha VALUES ('/', ?2, ?1, ?2 + ?3, ?3, 200, 10, 1)",
                    rusqlite::params![scheduled, start, duration],
                )
                .unwrap();
            }
            path
        };
        // Process a runs 3 s with its window at [1, 2); b runs 2 s, window at [0, 1):
        // they end together. a: 99 fast requests in the window (scheduled releases; the
        // actual sends lag, one past the window's end), slow ones before and after it.
        let mut a: Vec<(Option<f64>, f64, f64)> = (0..99)
            .map(|i| {
                (
                    Some(1.0 + f64::from(i) / 100.0),
                    1.03 + f64::from(i) / 100.0,
                    0.001,
                )
            })
            .collect();
        a.extend([(Some(0.5), 0.5, 0.050), (Some(2.5), 2.5, 0.050)]);
        // b: one slow request in the window, released without correction, and one outside.
        let b = [(None, 0.5, 0.009), (None, 1.5, 0.070)];
        let logs = [
            request_log(&write("a.db", &a)).unwrap(),
            request_log(&write("b.db", &b)).unwrap(),
        ];
        assert_eq!(logs[0][0], (1.0, 1.0), "release = scheduled, latency in ms");
        assert_eq!(
            logs[1][0],
            (0.5, 9.0),
            "release = start when nothing was scheduled"
        );
        let (window, whole) = window_latencies(&logs, &[2.0, 1.0], 1.0);
        assert_eq!((window.len(), whole.len()), (100, 103));
        // Merged over both processes: the slow one is the 100th of 100, above the p99
        // of the two together though it is b's whole p50.
        assert!((nearest_rank(&window, 500) - 1.0).abs() < 1e-9);
        assert!((nearest_rank(&window, 990) - 1.0).abs() < 1e-9);
        assert!((nearest_rank(&window, 999) - 9.0).abs() < 1e-9);
        assert!((nearest_rank(&whole, 999) - 70.0).abs() < 1e-9);
        assert!(nearest_rank(&[], 500).is_nan());
        assert!((nearest_rank(&[2.0], 999) - 2.0).abs() < 1e-9);
        assert!(request_log(&dir.path().join("missing.db")).is_err());
    }
}
