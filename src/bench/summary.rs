//! A serve benchmark's runs summed up: the medians per rate, the headline (the highest
//! rate served in full within the p99 bound), and the verdict on the serving targets.

use anyhow::Context;

use super::p50;
use super::procfs::{CpuUse, Waiting, cpu_line};
use super::runs::{
    ServeBenchOptions, ServeBenchReport, ServeRun, ServerMeans, TARGET_OVERHEAD, TARGET_RPS,
    Targets,
};
use super::scrape::server_time_line;

/// The report of `runs` (every run, in the order made) and the `/healthz` floor.
pub(super) fn summarise(
    opts: &ServeBenchOptions,
    factory: String,
    runs: Vec<ServeRun>,
    floor: Option<ServeRun>,
) -> anyhow::Result<ServeBenchReport> {
    let passes = opts.repeat.max(1);
    let sustained = |r: &&ServeRun| {
        r.rps >= 0.95 * f64::from(r.offered_rps)
            && (r.errors as f64) < 0.001 * r.rps * f64::from(opts.seconds)
            && r.p99_ms <= opts.slo_p99_ms
    };
    // One row per rate: the medians of its runs (the run itself when there is one).
    let medians: Vec<ServeRun> = opts
        .rates
        .iter()
        .map(|&rate| {
            let of_rate: Vec<&ServeRun> = runs.iter().filter(|r| r.offered_rps == rate).collect();
            let median = |f: fn(&ServeRun) -> f64| p50(of_rate.iter().map(|r| f(r)).collect());
            ServeRun {
                offered_rps: rate,
                generators: of_rate.first().map_or(1, |r| r.generators),
                rps: median(|r| r.rps),
                p50_ms: median(|r| r.p50_ms),
                p99_ms: median(|r| r.p99_ms),
                p999_ms: median(|r| r.p999_ms),
                whole_run_p99_ms: median(|r| r.whole_run_p99_ms),
                errors: of_rate.iter().map(|r| r.errors).max().unwrap_or(0),
                bare_search_p50_ms: median(|r| r.bare_search_p50_ms),
                bare_redis_p50_ms: median(|r| r.bare_redis_p50_ms),
                overhead_ratio: median(|r| r.overhead_ratio),
                cpu: {
                    let cpus: Vec<CpuUse> = of_rate.iter().filter_map(|r| r.cpu).collect();
                    let median = |f: fn(&CpuUse) -> f64| p50(cpus.iter().map(f).collect());
                    cpus.first().map(|c| CpuUse {
                        server: median(|c| c.server),
                        redis: median(|c| c.redis),
                        generators: median(|c| c.generators),
                        machine: median(|c| c.machine),
                        cores: c.cores,
                        stolen: median(|c| c.stolen),
                        waiting: {
                            let waits: Vec<Waiting> =
                                cpus.iter().filter_map(|c| c.waiting).collect();
                            let median =
                                |f: fn(&Waiting) -> f64| p50(waits.iter().map(f).collect());
                            (!waits.is_empty()).then(|| Waiting {
                                server: median(|w| w.server),
                                redis: median(|w| w.redis),
                                generators: median(|w| w.generators),
                            })
                        },
                    })
                },
                // Per bound, the median share (runs whose `/metrics` was read alike).
                server_within_ms: of_rate
                    .first()
                    .map_or(&[][..], |r| &r.server_within_ms[..])
                    .iter()
                    .enumerate()
                    .map(|(i, &(ms, _))| {
                        let shares = of_rate
                            .iter()
                            .filter_map(|r| r.server_within_ms.get(i).map(|&(_, s)| s))
                            .collect();
                        (ms, p50(shares))
                    })
                    .collect(),
                server_mean_ms: {
                    let means: Vec<ServerMeans> =
                        of_rate.iter().filter_map(|r| r.server_mean_ms).collect();
                    let median = |f: fn(&ServerMeans) -> f64| p50(means.iter().map(f).collect());
                    (!means.is_empty()).then(|| ServerMeans {
                        request: median(|m| m.request),
                        store_lookup: median(|m| m.store_lookup),
                        search: median(|m| m.search),
                    })
                },
            }
        })
        .collect();
    if passes > 1 {
        eprintln!("medians of {passes} runs per rate:");
        for m in &medians {
            eprintln!(
                "  {:>6} offered: {:>8.0} req/s  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  \
                 errors (most) {}  p50/bare {:.2}{}{}",
                m.offered_rps,
                m.rps,
                m.p50_ms,
                m.p99_ms,
                m.p999_ms,
                m.errors,
                m.overhead_ratio,
                cpu_line(m.cpu.as_ref(), m.rps),
                server_time_line(&m.server_within_ms, m.server_mean_ms.as_ref()),
            );
        }
    }
    let best = medians
        .iter()
        .filter(sustained)
        .max_by_key(|r| r.offered_rps);
    let which = if best.is_some() {
        format!("the highest rate served within p99 {} ms", opts.slo_p99_ms)
    } else {
        format!(
            "no rate was served within p99 {} ms; the first rate",
            opts.slo_p99_ms
        )
    };
    let last = best.or(medians.first()).cloned().context("no rate given")?;
    eprintln!(
        "bare index search p50 {:.3} ms, bare redis lookup p50 {:.3} ms; at {} req/s \
         offered ({which}) HTTP p50 is {:.2}x their sum{}",
        last.bare_search_p50_ms,
        last.bare_redis_p50_ms,
        last.offered_rps,
        last.overhead_ratio,
        if passes > 1 {
            " (medians over the runs, each run's ratio against the bare sum taken before it)"
        } else {
            ""
        }
    );
    let targets = medians
        .iter()
        .find(|m| m.offered_rps == TARGET_RPS)
        .map(|m| {
            let of_rate: Vec<&ServeRun> = runs
                .iter()
                .filter(|r| r.offered_rps == TARGET_RPS)
                .collect();
            let targets = Targets {
                offered_rps: TARGET_RPS,
                p99_ms: m.p99_ms,
                p99_met: sustained(&m),
                overhead_ratio: m.overhead_ratio,
                overhead_met: m.overhead_ratio <= TARGET_OVERHEAD,
                runs_meeting_both: of_rate
                    .iter()
                    .filter(|r| sustained(r) && r.overhead_ratio <= TARGET_OVERHEAD)
                    .count(),
                runs: of_rate.len(),
            };
            let met = |ok: bool| if ok { "met" } else { "missed" };
            eprintln!(
                "targets at {TARGET_RPS} req/s{}: served in full with p99 {:.3} ms <= {} ms: \
                 {}; HTTP p50 {:.2}x the bare sum <= {TARGET_OVERHEAD}: {}; runs meeting \
                 both: {} of {}",
                if passes > 1 { " (medians)" } else { "" },
                targets.p99_ms,
                opts.slo_p99_ms,
                met(targets.p99_met),
                targets.overhead_ratio,
                met(targets.overhead_met),
                targets.runs_meeting_both,
                targets.runs,
            );
            targets
        });
    Ok(ServeBenchReport {
        users: opts.users,
        items: opts.items,
        factory,
        slo_p99_ms: opts.slo_p99_ms,
        slo_met: best.is_some(),
        rps: last.rps,
        p50_ms: last.p50_ms,
        p99_ms: last.p99_ms,
        p999_ms: last.p999_ms,
        errors: last.errors,
        bare_search_p50_ms: last.bare_search_p50_ms,
        bare_redis_p50_ms: last.bare_redis_p50_ms,
        overhead_ratio: last.overhead_ratio,
        healthz: floor,
        targets,
        repeat: passes,
        medians,
        runs,
    })
}
