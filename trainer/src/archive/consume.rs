//! `recsys archive`: the events topic consumed into the archive, a flush at a time,
//! exactly once across restarts.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use recsys_schemas::event::now_ms;
use recsys_schemas::{EventLimits, KafkaClient, KafkaConfig};
use serde::Serialize;

use super::layout::{Pending, committed, day_of, flush, recover};
use crate::{Result, TrainerError};

/// Settings of `recsys archive`.
#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    pub brokers: String,
    /// The `[kafka]` table.
    pub kafka: KafkaConfig,
    pub topic: String,
    pub group_id: String,
    pub out: PathBuf,
    /// Stop once every partition has reached the end it had at start.
    pub until_caught_up: bool,
    pub flush_events: usize,
    pub flush_interval: Duration,
    /// `[events]`: the archive keeps what the trainer would train on, by the same rule.
    pub limits: EventLimits,
}

/// What an archive run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArchiveReport {
    pub archived: u64,
    pub malformed: u64,
    pub files_recovered: usize,
    pub next_offsets: BTreeMap<i32, i64>,
}

/// Consumes the events topic into the archive until `stop` returns true (or, with
/// `until_caught_up`, until the topic's ends at start are reached).
pub fn run(opts: &ArchiveOptions, stop: &dyn Fn() -> bool) -> Result<ArchiveReport> {
    fs::create_dir_all(&opts.out).map_err(TrainerError::io(&opts.out))?;
    let mut report = ArchiveReport {
        files_recovered: recover(&opts.out)?,
        ..ArchiveReport::default()
    };
    if report.files_recovered > 0 {
        tracing::warn!(
            files = report.files_recovered,
            "removed archive files of an uncommitted flush"
        );
    }
    let mut next = committed(&opts.out)?;
    let consumer: BaseConsumer = opts
        .kafka
        .properties(
            KafkaClient::ArchiveConsumer,
            &opts.brokers,
            Some(&opts.group_id),
        )
        .into_iter()
        .collect::<ClientConfig>()
        .create()?;
    let md = consumer.fetch_metadata(Some(&opts.topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .find(|t| t.name() == opts.topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        return Err(TrainerError::Data(format!(
            "topic {:?} has no partitions (does it exist?)",
            opts.topic
        )));
    }
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for &p in &partitions {
        let offset = match next.get(&p) {
            Some(&o) => Offset::Offset(o),
            None => Offset::Beginning,
        };
        tpl.add_partition_offset(&opts.topic, p, offset)?;
        let (_, high) = consumer.fetch_watermarks(&opts.topic, p, Duration::from_secs(10))?;
        ends.insert(p, high);
    }
    consumer.assign(&tpl)?;
    tracing::info!(topic = %opts.topic, from = ?next, ends = ?ends, "archiving");
    let mut pending: HashMap<i32, Pending> = HashMap::new();
    let mut buffered = 0usize;
    let mut last_flush = Instant::now();
    let mut position: BTreeMap<i32, i64> = next.clone();
    loop {
        let caught_up = opts.until_caught_up
            && ends
                .iter()
                .all(|(p, &end)| position.get(p).copied().unwrap_or(0) >= end);
        if caught_up || stop() {
            break;
        }
        if let Some(msg) = consumer.poll(Duration::from_millis(100)) {
            let msg = msg?;
            let p = msg.partition();
            position.insert(p, msg.offset() + 1);
            let reference = EventLimits::reference(now_ms(), msg.timestamp().to_millis());
            let parsed = msg
                .payload()
                .map(|b| opts.limits.parse(b, reference).map_err(|e| e.to_string()))
                .unwrap_or_else(|| Err("empty message".into()));
            let slot = pending.entry(p).or_default();
            slot.first.get_or_insert(msg.offset());
            slot.last = msg.offset();
            match parsed {
                Ok(e) => {
                    slot.by_day.entry(day_of(e.ts)).or_default().push(e);
                    slot.events += 1;
                    buffered += 1;
                }
                // The trainer dead-letters these; the archive keeps valid events only.
                Err(_) => report.malformed += 1,
            }
        }
        if buffered >= opts.flush_events || last_flush.elapsed() >= opts.flush_interval {
            report.archived += flush(&opts.out, &mut pending, &mut next)? as u64;
            buffered = 0;
            last_flush = Instant::now();
        }
    }
    report.archived += flush(&opts.out, &mut pending, &mut next)? as u64;
    report.next_offsets = next;
    Ok(report)
}
