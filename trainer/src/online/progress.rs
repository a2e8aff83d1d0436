//! Where the model stands in the event stream, per partition of the events topic, and
//! the consumer hook that resumes every assigned partition there rather than at the
//! group's committed offset.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Offset, Statistics};
use tracing::{info, warn};

use super::health::now_ms;
use super::stats::TrainerStats;

/// Where the model stands in the event stream, per partition of the events topic.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// The next offset to read: every message below it is in the model, dead-lettered,
    /// skipped, or in the batch being filled.
    pub(super) next: BTreeMap<i32, i64>,
    pub(super) applied: BTreeMap<i32, u64>,
    pub(super) dead_lettered: BTreeMap<i32, u64>,
    /// Events of batches skipped for a non-finite loss.
    pub(super) skipped: BTreeMap<i32, u64>,
    /// Partitions of the events in the batch being filled, in order.
    pub(super) pending: Vec<i32>,
    /// Shared with the consumer's rebalance hook: where to resume an assigned partition.
    pub(super) resume: Arc<Mutex<BTreeMap<i32, i64>>>,
}

/// On every partition assignment, starts each events partition at the model's own
/// position (from the checkpoint, then from what has been consumed) instead of the
/// group's committed offset. Also feeds [`Health`]: the assignment, and from librdkafka's
/// statistics the brokers up and each partition's lag.
pub(super) struct ResumeContext {
    pub(super) topic: String,
    pub(super) resume: Arc<Mutex<BTreeMap<i32, i64>>>,
    pub(super) stats: Arc<TrainerStats>,
}

impl ClientContext for ResumeContext {
    fn stats(&self, statistics: Statistics) {
        let health = &self.stats.health;
        let up = statistics
            .brokers
            .values()
            .filter(|b| b.state == "UP")
            .count();
        health.brokers_up.store(up as u64, Ordering::Relaxed);
        health.reported_ms.store(now_ms(), Ordering::Relaxed);
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let resume = self.resume.lock().unwrap_or_else(|p| p.into_inner());
        let mut lag = BTreeMap::new();
        for (&partition, p) in &topic.partitions {
            // The end a read_committed consumer can reach (the high watermark without
            // transactions), less where the trainer stands.
            let end = if p.ls_offset >= 0 {
                p.ls_offset
            } else {
                p.hi_offset
            };
            let at = resume.get(&partition).copied().unwrap_or(p.app_offset);
            if partition >= 0 && end >= 0 && at >= 0 {
                lag.insert(partition, (end - at).max(0));
            }
        }
        drop(resume);
        *health.lag.lock().unwrap_or_else(|p| p.into_inner()) = lag;
    }
}

impl ConsumerContext for ResumeContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let assigned = match rebalance {
            Rebalance::Assign(tpl) => tpl.elements_for_topic(&self.topic).len(),
            Rebalance::Revoke(_) | Rebalance::Error(_) => 0,
        };
        self.stats
            .health
            .assigned
            .store(assigned as u64, Ordering::Relaxed);
    }

    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        let resume = self.resume.lock().unwrap_or_else(|p| p.into_inner());
        for mut elem in tpl.elements_for_topic(&self.topic) {
            if let Some(&offset) = resume.get(&elem.partition()) {
                info!(
                    partition = elem.partition(),
                    offset, "resuming from the model's position"
                );
                if let Err(e) = elem.set_offset(Offset::Offset(offset)) {
                    warn!(error = %e, "could not set the resume offset");
                }
            }
        }
    }
}

/// What became of one message of the events topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Received {
    /// Parsed and queued for the next training step.
    Queued,
    /// Sent to the dead-letter topic.
    DeadLettered,
}

impl Progress {
    /// Records a message taken from `partition` at `offset`.
    pub(super) fn received(&mut self, partition: i32, offset: i64, what: Received) {
        self.next.insert(partition, offset + 1);
        self.resume
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(partition, offset + 1);
        match what {
            Received::Queued => self.pending.push(partition),
            Received::DeadLettered => *self.dead_lettered.entry(partition).or_default() += 1,
        }
    }

    /// Records that the queued events went through one training step.
    pub(super) fn trained(&mut self, skipped: bool) {
        let count = if skipped {
            &mut self.skipped
        } else {
            &mut self.applied
        };
        for p in self.pending.drain(..) {
            *count.entry(p).or_default() += 1;
        }
    }
}

pub(super) fn key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// The entries of `topic` in a map keyed by [`key`], by partition.
pub(super) fn of_topic<V: Copy>(m: &BTreeMap<String, V>, topic: &str) -> BTreeMap<i32, V> {
    m.iter()
        .filter_map(|(k, &v)| {
            let (t, p) = k.rsplit_once('/')?;
            (t == topic).then_some(())?;
            Some((p.parse().ok()?, v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Messages of several partitions, each in offset order but interleaved at random,
        /// some dead-lettered, trained in batches of random size with random skipped
        /// batches, checkpointed at random moments (always after training what is queued,
        /// as the trainer does): the stored offset of every partition is the contiguous
        /// low watermark of what was processed, and every message below it is counted
        /// exactly once.
        #[test]
        fn stored_offsets_are_contiguous_low_watermarks(
            stream in prop::collection::vec((0i32..4, any::<bool>(), 0u8..10, any::<bool>()), 1..400)
        ) {
            let mut progress = Progress::default();
            let mut next_offset = [0i64; 4];
            for (partition, bad, action, skip) in stream {
                let offset = next_offset[partition as usize];
                next_offset[partition as usize] += 1;
                let what = if bad { Received::DeadLettered } else { Received::Queued };
                progress.received(partition, offset, what);
                // Sometimes a training step, sometimes a checkpoint (train first).
                if action == 0 || action == 1 {
                    progress.trained(skip && action == 0);
                }
                if action == 2 {
                    progress.trained(false);
                    for (&p, &next) in &progress.next {
                        prop_assert_eq!(next, next_offset[p as usize]);
                        let n = |m: &BTreeMap<i32, u64>| m.get(&p).copied().unwrap_or(0);
                        prop_assert_eq!(
                            n(&progress.applied) + n(&progress.dead_lettered) + n(&progress.skipped),
                            next as u64
                        );
                    }
                    let resume = progress.resume.lock().unwrap().clone();
                    prop_assert_eq!(resume, progress.next.clone());
                }
            }
        }
    }
}
