//! The time from publishing a delta of item vectors to it being searchable in a replica:
//! the trainer's Kafka sink and the serving follower on an embedded broker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use recsys_index::IndexConfig;
use recsys_schemas::KafkaConfig;
use recsys_serving::{CatalogHolder, FollowConfig, ItemFollower};
use recsys_trainer::sink::{ItemUpdate, ItemVectorSink, KafkaItemVectorSink};
use tokio_util::sync::CancellationToken;

use super::clustered;
use crate::embedded::EmbeddedKafka;

/// Publishes a base catalog through the trainer's Kafka sink, lets a replica catch up,
/// then times a `delta_items` delta from the start of its publish to the moment every
/// changed item carries its new vector in the replica's index.
/// The size of the measured delta and the base catalog it lands on.
pub(super) struct DeltaSize {
    pub(super) dim: usize,
    pub(super) delta_base_items: usize,
    pub(super) delta_items: usize,
    pub(super) seed: u64,
}

pub(super) async fn delta(opts: &DeltaSize, index_cfg: &IndexConfig) -> anyhow::Result<f64> {
    let dim = opts.dim;
    // 16 partitions: the mock broker keeps only the newest 5 MB of each partition, and the
    // base catalog is published before the replica starts reading.
    let kafka = EmbeddedKafka::start(&[("item-vectors", 16), ("item-popularity", 1)])?;
    let brokers = kafka.bootstrap_servers().to_owned();
    let sink = KafkaItemVectorSink::new(
        &KafkaConfig::default(),
        &brokers,
        "item-vectors",
        "item-popularity",
    )?;
    let (base, _) = clustered(opts.delta_base_items, 0, dim, opts.seed + 1);
    let updates = |range: std::ops::Range<usize>, vectors: &[f32]| -> Vec<ItemUpdate> {
        range
            .map(|i| ItemUpdate {
                item_id: format!("item-{i}"),
                vector: vectors[i * dim..(i + 1) * dim].to_vec(),
            })
            .collect()
    };
    sink.publish_items(1, updates(0..opts.delta_base_items, &base))
        .await?;

    let catalog = Arc::new(CatalogHolder::new(1, index_cfg.clone()));
    let follower = ItemFollower::new(
        FollowConfig {
            brokers: brokers.clone(),
            ..FollowConfig::default()
        },
        KafkaConfig::default(),
        1,
        catalog.clone(),
    )?;
    let status = follower.status();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(follower.run(cancel.clone()));
    let deadline = Instant::now() + Duration::from_secs(300);
    while !status.is_ready() {
        if Instant::now() > deadline || task.is_finished() {
            bail!("replica did not catch up with the base catalog");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if catalog.load().item_count() != opts.delta_base_items {
        bail!(
            "replica caught up with {} of {} items",
            catalog.load().item_count(),
            opts.delta_base_items
        );
    }
    eprintln!(
        "replica caught up with {} items ({})",
        catalog.load().item_count(),
        catalog.load().index.as_ref().map_or("-", |i| i.factory())
    );

    // The delta: new vectors for the first `delta_items` items.
    let (fresh, _) = clustered(opts.delta_items, 0, dim, opts.seed + 2);
    let delta = updates(0..opts.delta_items, &fresh);
    let probe: Vec<(String, Vec<f32>)> = delta
        .iter()
        .map(|u| (u.item_id.clone(), u.vector.clone()))
        .collect();
    let started = Instant::now();
    sink.publish_items(1, delta).await?;
    let published_ms = started.elapsed().as_secs_f64() * 1e3;
    let updated = |c: &recsys_serving::Catalog| {
        let Some(index) = c.index.as_ref() else {
            return false;
        };
        probe.iter().all(|(item, v)| {
            c.ids.get(item).and_then(|row| index.vector(u64::from(row))) == Some(v.as_slice())
        })
    };
    loop {
        let c = catalog.load();
        if updated(&c) {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the delta was not searchable after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let searchable_ms = started.elapsed().as_secs_f64() * 1e3;
    eprintln!(
        "delta of {} items over {} searchable {searchable_ms:.0} ms after its publish started \
         (publish acknowledged after {published_ms:.0} ms)",
        opts.delta_items, opts.delta_base_items
    );
    cancel.cancel();
    task.await.context("follower task")??;
    Ok(searchable_ms)
}
