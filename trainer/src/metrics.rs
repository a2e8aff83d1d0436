//! Every Prometheus metric of the trainer, defined here: its counters and the
//! prequential quality, exported as gauges on the `/metrics` of the process that runs it
//! (`recsys run` serves them beside the API's).

use std::sync::atomic::Ordering;

use crate::TrainerStats;

/// `(name, help, value)` of a gauge computed when `/metrics` is scraped.
pub type Gauge = (&'static str, &'static str, f64);

/// The trainer's counters as gauges, read when `/metrics` is scraped.
pub fn gauges(s: &TrainerStats) -> Vec<Gauge> {
    let (hr, ndcg) = s.prequential();
    vec![
        (
            "recsys_trainer_events_trained",
            "Events trained on since start.",
            s.events_trained.load(Ordering::Relaxed) as f64,
        ),
        (
            "recsys_trainer_events_dead_lettered",
            "Malformed events sent to the dead-letter topic.",
            s.events_rejected.load(Ordering::Relaxed) as f64,
        ),
        (
            "recsys_trainer_batches_skipped",
            "Batches skipped for a non-finite loss.",
            s.batches_skipped.load(Ordering::Relaxed) as f64,
        ),
        (
            "recsys_trainer_events_per_second",
            "Events per second of training-step time.",
            s.train_events_per_s(),
        ),
        (
            "recsys_trainer_prequential_hit_rate_at_10",
            "Prequential HitRate@10 over the sliding window.",
            hr,
        ),
        (
            "recsys_trainer_prequential_ndcg_at_10",
            "Prequential NDCG@10 over the sliding window.",
            ndcg,
        ),
        (
            "recsys_trainer_prequential_scored",
            "Events ranked by the prequential evaluation since start.",
            s.prequential_scored.load(Ordering::Relaxed) as f64,
        ),
        (
            "recsys_trainer_generation",
            "Model generation the trainer evolves.",
            s.generation.load(Ordering::Relaxed) as f64,
        ),
        (
            "recsys_trainer_generation_switches",
            "Generation switches followed since start (models/CURRENT flips).",
            s.generation_switches.load(Ordering::Relaxed) as f64,
        ),
    ]
}
