//! `recsys bench serve`: the HTTP API under fixed-rate load. A real redis-server holds
//! every user's vector and a short history, the catalog is IVF-PQ, the server is built
//! as `recsys serve` builds it, and `oha` on the same machine offers fixed rates. In the
//! same run, the bare index search and the bare user-store lookup, so the serving
//! overhead shows as a ratio.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use recsys_index::IndexConfig;
use recsys_serving::CatalogHolder;

use super::bare::{BARE_SAMPLES, bare_costs};
use super::clustered;
use super::load::load;
use super::procfs::cpu_line;
use super::runs::{ServeBenchOptions, ServeBenchReport};
use super::scrape::server_time_line;
use super::summary::summarise;

/// The HTTP API under load: a real redis-server holding every user's vector and a short
/// history, an IVF-PQ catalog, the server as `recsys serve` builds it, and `oha` on the
/// same machine offering fixed rates. In the same run, the bare index search and the bare
/// user-store lookup, so the serving overhead shows as a ratio.
/// `serving` is the effective `[serving]` configuration (workers, search threads, ...);
/// its address and API keys are replaced by a loopback port and no keys. `index` is the
/// effective `[index]` one (nprobe, re-rank depth), its factory chosen by `opts.index`.
pub async fn serve(
    opts: ServeBenchOptions,
    serving: recsys_serving::ServingConfig,
    index: IndexConfig,
) -> anyhow::Result<ServeBenchReport> {
    use recsys_serving::{AppState, FollowStatus, RedisUserVectorStore, ServingConfig};
    use recsys_trainer::sink::{RedisUserVectorSink, UserUpdate, UserVectorSink};

    anyhow::ensure!(
        !opts.rates.is_empty() && opts.rates.iter().all(|&r| r > 0),
        "--rate: give one or more rates above 0, got {:?}",
        opts.rates
    );
    anyhow::ensure!(
        opts.history <= 500 && opts.history < opts.items,
        "--history: at most 500 (the recent items serving reads) and fewer than --items, got {}",
        opts.history
    );
    let dim = opts.dim;
    let redis = recsys_testkit::RedisServer::start();
    let redis_pid = redis.pid();
    let (items, users) = clustered(opts.items, opts.users, dim, opts.seed);
    let factory = match opts.index.as_str() {
        "ivf-pq" => IndexConfig {
            factory: None,
            flat_below: 0,
            ivf_flat_below: 0,
            ..index.clone()
        }
        .factory_for(opts.items, dim),
        "default" => index.factory_for(opts.items, dim),
        other => other.to_owned(),
    };
    let catalog = Arc::new(CatalogHolder::new(
        1,
        IndexConfig {
            factory: Some(factory.clone()),
            ..index.clone()
        },
    ));
    eprintln!("building {factory} over {} items", opts.items);
    let batch: Vec<(String, Vec<f32>)> = (0..opts.items)
        .map(|i| (format!("i{i}"), items[i * dim..(i + 1) * dim].to_vec()))
        .collect();
    tokio::task::block_in_place(|| catalog.apply_items(1, batch))?;
    catalog.set_popular(1, (0..100).map(|i| (format!("i{i}"), 1.0)).collect())?;

    eprintln!("writing {} user vectors to redis-server", opts.users);
    let writer = RedisUserVectorSink::connect(&redis.url(), 3600, 500).await?;
    let updates: Vec<UserUpdate> = (0..opts.users)
        .map(|u| UserUpdate {
            user_id: format!("u{u}"),
            vector: users[u * dim..(u + 1) * dim].to_vec(),
            new_items: (0..opts.history)
                .map(|j| format!("i{}", (u * 7 + j) % opts.items))
                .collect(),
        })
        .collect();
    for chunk in updates.chunks(10_000) {
        writer.publish(1, chunk).await?;
    }

    let store =
        Arc::new(RedisUserVectorStore::connect(&redis.url(), Duration::from_millis(50)).await?);
    let snapshot = catalog.load();
    let (users, bare_store) = (Arc::new(users), store.clone());
    let bare = |pass: u32| {
        let (store, snapshot, users) = (bare_store.clone(), snapshot.clone(), users.clone());
        let first_user = (pass as usize * BARE_SAMPLES) % opts.users;
        let thread = std::thread::spawn(move || {
            bare_costs(&*store, &snapshot, &users, dim, opts.users, first_user)
        });
        tokio::task::block_in_place(|| thread.join())
            .map_err(|_| anyhow::anyhow!("bare measurement panicked"))?
    };
    let first = bare(0)?;
    eprintln!(
        "bare index search p50 {:.3} ms, bare redis lookup p50 {:.3} ms (measured again \
         before every run)",
        first.search_ms, first.redis_ms
    );

    let follow = Arc::new(FollowStatus::default());
    follow.set_ready();
    let cfg = ServingConfig {
        bind: "127.0.0.1:0".into(),
        auth: Default::default(),
        ..serving
    };
    eprintln!(
        "server: {} HTTP workers (0 = one per core), searches {}",
        cfg.workers,
        match cfg.search_threads {
            0 => "inline on the workers".to_owned(),
            n => format!("on a pool of {n} threads"),
        }
    );
    let state = AppState::new(catalog.clone(), store, cfg, follow)?;
    let (server, addr) = recsys_serving::start(state)?;
    let handle = server.handle();
    tokio::spawn(server);
    // Every user once, oha picking one at random per request: each user as likely as any
    // other. (URLs drawn from a regex such as `u[0-9]{1,5}` would send 20% of the
    // requests to ten users, and 8% to ids with leading zeros that no user has.)
    let mut urls = tempfile::NamedTempFile::new().context("the URL list")?;
    {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(urls.as_file_mut());
        for u in 0..opts.users {
            writeln!(w, "http://{addr}/v1/users/u{u}/recommendations?k=10")?;
        }
        w.flush()?;
    }
    let url = vec![
        "--urls-from-file".to_owned(),
        urls.path().display().to_string(),
    ];
    let mut runs = Vec::new();
    let passes = opts.repeat.max(1);
    for (pass, &rate) in (1..=passes).flat_map(|p| opts.rates.iter().map(move |r| (p, r))) {
        eprintln!(
            "offering {rate} requests/s for {} s (pass {pass} of {passes})",
            opts.seconds
        );
        let (url, seconds, conns, gens) =
            (url.clone(), opts.seconds, opts.connections, opts.generators);
        // The run's own denominator, taken on the idle machine just before its load: the
        // host's speed drifts over minutes (bare sums of 0.185–0.262 ms in one day).
        let bare = if runs.is_empty() {
            first
        } else {
            bare(u32::try_from(runs.len()).unwrap_or(u32::MAX))?
        };
        let mut run = tokio::task::spawn_blocking(move || {
            load(&url, rate, seconds, conns, gens, redis_pid, addr)
        })
        .await??;
        run.bare_search_p50_ms = bare.search_ms;
        run.bare_redis_p50_ms = bare.redis_ms;
        run.overhead_ratio = run.p50_ms / (bare.search_ms + bare.redis_ms);
        eprintln!(
            "  {:>6} offered ({} oha): {:>8.0} req/s  p50 {:.3} ms  p99 {:.3} ms  \
             p99.9 {:.3} ms  errors {}  p50/bare {:.2}  (whole run: p99 {:.3} ms)\n\
             {:>11}bare just before: search {:.3} ms + redis {:.3} ms{}{}",
            run.offered_rps,
            run.generators,
            run.rps,
            run.p50_ms,
            run.p99_ms,
            run.p999_ms,
            run.errors,
            run.overhead_ratio,
            run.whole_run_p99_ms,
            "",
            bare.search_ms,
            bare.redis_ms,
            cpu_line(run.cpu.as_ref(), run.rps),
            server_time_line(&run.server_within_ms, run.server_mean_ms.as_ref()),
        );
        runs.push(run);
    }
    // The floor: the same load on `GET /healthz`, which does no work, shows what the HTTP
    // exchange and the load generator cost at the highest rate on this machine.
    let floor = match opts.rates.iter().max() {
        Some(&rate) => {
            let (url, seconds, conns, gens) = (
                vec![format!("http://{addr}/healthz")],
                opts.seconds,
                opts.connections,
                opts.generators,
            );
            eprintln!("offering {rate} requests/s to /healthz for {seconds} s");
            let run = tokio::task::spawn_blocking(move || {
                load(&url, rate, seconds, conns, gens, redis_pid, addr)
            })
            .await??;
            eprintln!(
                "  /healthz at {rate}: p50 {:.3} ms  p99 {:.3} ms (HTTP and load-generator \
                 floor){}{}",
                run.p50_ms,
                run.p99_ms,
                cpu_line(run.cpu.as_ref(), run.rps),
                server_time_line(&run.server_within_ms, run.server_mean_ms.as_ref()),
            );
            Some(run)
        }
        None => None,
    };
    handle.stop(true).await;
    summarise(&opts, factory, runs, floor)
}
