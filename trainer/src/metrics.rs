//! Every Prometheus metric of the trainer, defined here: its counters, its health, the
//! consumer lag per partition, the freshness histograms and the prequential quality, in
//! the text exposition format. `recsys train` serves them on its admin address, `recsys
//! run` beside the API's on its server.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::TrainerStats;
use crate::online::health::now_ms;

/// Appends the trainer's metrics to `out`.
pub fn render(s: &TrainerStats, out: &mut String) {
    let counters: [(&str, &str, &AtomicU64); 18] = [
        ("events_trained", "Events trained on.", &s.events_trained),
        (
            "events_dead_lettered",
            "Malformed events sent to the dead-letter topic.",
            &s.events_rejected,
        ),
        (
            "events_skipped",
            "Events of batches skipped for a non-finite loss.",
            &s.events_skipped,
        ),
        (
            "events_not_admitted",
            "Events of users or items not admitted yet (trainer.min_count).",
            &s.events_not_admitted,
        ),
        ("batches", "Training steps.", &s.batches),
        (
            "batches_skipped",
            "Batches skipped for a non-finite loss.",
            &s.batches_skipped,
        ),
        ("publishes", "Publishes of changed vectors.", &s.publishes),
        (
            "publish_errors",
            "Publishes that failed (retried with the next).",
            &s.publish_errors,
        ),
        ("checkpoints", "Checkpoints written.", &s.checkpoints),
        (
            "checkpoint_errors",
            "Checkpoints that failed (retried at the next interval).",
            &s.checkpoint_errors,
        ),
        ("snapshots", "Base index snapshots written.", &s.snapshots),
        (
            "snapshot_errors",
            "Base index snapshots that failed.",
            &s.snapshot_errors,
        ),
        (
            "item_updates",
            "Item-metadata messages applied.",
            &s.item_updates,
        ),
        (
            "item_updates_rejected",
            "Item-metadata messages sent to the dead-letter topic.",
            &s.item_updates_rejected,
        ),
        (
            "users_expired",
            "Users expired (trainer.expire_after_s).",
            &s.users_expired,
        ),
        (
            "items_expired",
            "Items expired (trainer.expire_after_s).",
            &s.items_expired,
        ),
        (
            "generation_switches",
            "Generation switches followed (models/CURRENT flips).",
            &s.generation_switches,
        ),
        (
            "prequential_scored",
            "Events ranked by the prequential evaluation.",
            &s.prequential_scored,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(
            out,
            "# HELP recsys_trainer_{name}_total {help}\n# TYPE recsys_trainer_{name}_total counter\n\
             recsys_trainer_{name}_total {}",
            value.load(Ordering::Relaxed)
        );
    }
    let health = &s.health;
    let checks = health.checks(now_ms());
    let (hr, ndcg) = s.prequential();
    let gauges: [(&str, &str, f64); 9] = [
        (
            "ready",
            "1 when every readiness check passes (/readyz answers 200).",
            f64::from(u8::from(checks.iter().all(|c| c.ok))),
        ),
        (
            "brokers_up",
            "Brokers the consumer sees up, as of librdkafka's last report.",
            health.brokers_up.load(Ordering::Relaxed) as f64,
        ),
        (
            "assigned_partitions",
            "Events partitions assigned to this trainer.",
            health.assigned.load(Ordering::Relaxed) as f64,
        ),
        (
            "events_per_second",
            "Events per second of training-step time.",
            s.train_events_per_s(),
        ),
        (
            "last_loss",
            "Loss of the last finite training step.",
            f64::from(s.last_loss()),
        ),
        (
            "items_hidden",
            "Items currently hidden.",
            s.items_hidden.load(Ordering::Relaxed) as f64,
        ),
        (
            "generation",
            "Model generation the trainer evolves.",
            s.generation.load(Ordering::Relaxed) as f64,
        ),
        (
            "prequential_hit_rate_at_10",
            "Prequential HitRate@10 over the sliding window.",
            hr,
        ),
        (
            "prequential_ndcg_at_10",
            "Prequential NDCG@10 over the sliding window.",
            ndcg,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP recsys_trainer_{name} {help}\n# TYPE recsys_trainer_{name} gauge\n\
             recsys_trainer_{name} {value}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP recsys_trainer_consumer_lag Messages of the events topic not yet consumed, \
         per partition.\n# TYPE recsys_trainer_consumer_lag gauge"
    );
    for (partition, lag) in health.lag() {
        let _ = writeln!(
            out,
            "recsys_trainer_consumer_lag{{partition=\"{partition}\"}} {lag}"
        );
    }
    s.event_lag.render(
        out,
        "recsys_trainer_event_lag_seconds",
        "How old events are when applied: now minus the event's ts.",
    );
    s.publish_delay.render(
        out,
        "recsys_trainer_publish_delay_seconds",
        "From the arrival of a batch's first event to the publish of its vectors.",
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counters_health_lag_and_histograms_are_exported() {
        let s = TrainerStats::default();
        s.publish_errors.store(3, Ordering::Relaxed);
        s.checkpoint_errors.store(2, Ordering::Relaxed);
        s.snapshot_errors.store(1, Ordering::Relaxed);
        s.health.lag.lock().unwrap().insert(1, 42);
        s.event_lag.observe(Duration::from_millis(20));
        let mut out = String::new();
        render(&s, &mut out);
        for line in [
            "recsys_trainer_publish_errors_total 3\n",
            "recsys_trainer_checkpoint_errors_total 2\n",
            "recsys_trainer_snapshot_errors_total 1\n",
            "recsys_trainer_ready 0\n",
            "recsys_trainer_consumer_lag{partition=\"1\"} 42\n",
            "recsys_trainer_event_lag_seconds_bucket{le=\"0.025\"} 1\n",
            "recsys_trainer_publish_delay_seconds_count 0\n",
        ] {
            assert!(out.contains(line), "{line} missing from\n{out}");
        }
    }
}
