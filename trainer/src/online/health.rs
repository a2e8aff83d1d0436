//! Is the trainer healthy right now: what its `/readyz` reads. The consumer's own
//! reports feed it (librdkafka's statistics every second: broker states and each
//! partition's end offset; the assignment on every rebalance), and so do the loop's
//! publishes and checkpoints. Nothing here asks the broker anything.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use serde::Serialize;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// librdkafka reports statistics this often (`statistics.interval.ms` of the consumer).
pub const STATISTICS_INTERVAL_MS: i64 = 1_000;

/// The broker counts as unreachable when no broker is up, or when librdkafka has not
/// reported for this long (the client thread is stuck or gone).
const STATISTICS_STALE_MS: i64 = 5 * STATISTICS_INTERVAL_MS;

#[derive(Debug, Default)]
pub struct Health {
    /// When the loop started consuming (ms since the epoch; 0: not yet).
    pub started_ms: AtomicI64,
    /// Events partitions assigned to this trainer by the group.
    pub assigned: AtomicU64,
    /// Brokers librdkafka sees `UP`, as of its last report, and when that was.
    pub brokers_up: AtomicU64,
    pub reported_ms: AtomicI64,
    /// Per events partition: the end offset the broker last reported, and how far the
    /// trainer's position is behind it.
    pub lag: Mutex<BTreeMap<i32, i64>>,
    /// When a publish last finished without error (a tick with nothing to publish
    /// counts), and whether the last attempt failed.
    pub published_ms: AtomicI64,
    pub publish_failing: AtomicBool,
    /// The same for checkpoints, when they are on.
    pub checkpoints_on: AtomicBool,
    pub checkpointed_ms: AtomicI64,
    pub checkpoint_failing: AtomicBool,
    /// The intervals readiness measures recency against, ms.
    pub publish_interval_ms: AtomicU64,
    pub checkpoint_interval_ms: AtomicU64,
}

/// One readiness check: its name, whether it passes, and why not.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

impl Health {
    /// The checks of `/readyz`: the broker reachable, partitions assigned, the last
    /// publish and (when on) the last checkpoint recent and successful.
    pub fn checks(&self, now_ms: i64) -> Vec<Check> {
        let load = |a: &AtomicI64| a.load(Ordering::Relaxed);
        let started = load(&self.started_ms);
        if started == 0 {
            return vec![Check {
                name: "started",
                ok: false,
                detail: "restoring the model; not consuming yet".into(),
            }];
        }
        let up = self.brokers_up.load(Ordering::Relaxed);
        let reported = now_ms - load(&self.reported_ms).max(started);
        let broker = Check {
            name: "broker",
            ok: up > 0 && reported <= STATISTICS_STALE_MS,
            detail: if up == 0 {
                "no broker is reachable".into()
            } else if reported > STATISTICS_STALE_MS {
                format!("the Kafka client has not reported for {reported} ms")
            } else {
                format!("{up} broker(s) up")
            },
        };
        let assigned = self.assigned.load(Ordering::Relaxed);
        let consuming = Check {
            name: "consuming",
            ok: assigned > 0,
            detail: format!("{assigned} partition(s) assigned"),
        };
        // Recent: within a few intervals, and never less than 10 s (a long step or a
        // snapshot holds the loop for a while).
        let recent = |failing: &AtomicBool, at: &AtomicI64, interval: &AtomicU64, what: &str| {
            let window = (5 * interval.load(Ordering::Relaxed) as i64).max(10_000);
            let age = now_ms - load(at).max(started);
            let failing = failing.load(Ordering::Relaxed);
            let ok = !failing && age <= window;
            let detail = if failing {
                format!("the last {what} failed")
            } else if age > window {
                format!("no {what} for {age} ms (expected within {window} ms)")
            } else {
                format!("last {what} {age} ms ago")
            };
            (ok, detail)
        };
        let (ok, detail) = recent(
            &self.publish_failing,
            &self.published_ms,
            &self.publish_interval_ms,
            "publish",
        );
        let mut checks = vec![
            broker,
            consuming,
            Check {
                name: "publish",
                ok,
                detail,
            },
        ];
        if self.checkpoints_on.load(Ordering::Relaxed) {
            let (ok, detail) = recent(
                &self.checkpoint_failing,
                &self.checkpointed_ms,
                &self.checkpoint_interval_ms,
                "checkpoint",
            );
            checks.push(Check {
                name: "checkpoint",
                ok,
                detail,
            });
        }
        checks
    }

    /// Consumer lag per partition, as last computed.
    pub fn lag(&self) -> BTreeMap<i32, i64> {
        self.lag.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn published(&self, ok: bool) {
        if ok {
            self.published_ms.store(now_ms(), Ordering::Relaxed);
        }
        self.publish_failing.store(!ok, Ordering::Relaxed);
    }

    pub(crate) fn checkpointed(&self, ok: bool) {
        if ok {
            self.checkpointed_ms.store(now_ms(), Ordering::Relaxed);
        }
        self.checkpoint_failing.store(!ok, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(now: i64) -> Health {
        let h = Health::default();
        h.started_ms.store(now - 1_000, Ordering::Relaxed);
        h.assigned.store(2, Ordering::Relaxed);
        h.brokers_up.store(1, Ordering::Relaxed);
        h.reported_ms.store(now - 500, Ordering::Relaxed);
        h.publish_interval_ms.store(1_000, Ordering::Relaxed);
        h.published(true);
        h
    }

    fn failing(h: &Health, now: i64) -> Vec<&'static str> {
        h.checks(now)
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn each_check_fails_on_its_own_cause() {
        let now = now_ms();
        let h = running(now);
        assert!(failing(&h, now).is_empty(), "{:?}", h.checks(now));
        h.brokers_up.store(0, Ordering::Relaxed);
        assert_eq!(failing(&h, now), ["broker"]);
        h.brokers_up.store(1, Ordering::Relaxed);
        assert_eq!(failing(&h, now + 20_000), ["broker", "publish"]);
        h.publish_failing.store(true, Ordering::Relaxed);
        assert_eq!(failing(&h, now), ["publish"]);
        h.published(true);
        h.assigned.store(0, Ordering::Relaxed);
        assert_eq!(failing(&h, now), ["consuming"]);
        h.assigned.store(1, Ordering::Relaxed);
        h.checkpoints_on.store(true, Ordering::Relaxed);
        h.checkpoint_interval_ms.store(60_000, Ordering::Relaxed);
        h.checkpointed(false);
        assert_eq!(failing(&h, now), ["checkpoint"]);
        assert_eq!(failing(&Health::default(), now), ["started"]);
    }
}
