//! Messages collected into a batch, collapsed to the last change per item, and applied
//! to the catalog as one swap.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::Instant;

use rdkafka::message::{BorrowedMessage, Message};
use recsys_schemas::ItemMeta;
use recsys_schemas::contract::{ItemVectorMessage, POPULAR_KEY, PopularMessage};
use tracing::{error, info, warn};

use super::follower::{ItemFollower, now_ms};

/// Changes collected since the last swap, collapsed to the last change per item so a
/// batch applies exactly as the messages would one by one, in order.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) changes: HashMap<String, Option<Vec<f32>>>,
    /// New categories per item (from the `items` topic), last message wins.
    pub(super) categories: HashMap<String, Vec<String>>,
    /// Per (topic, partition), the offset after the last message taken into this batch.
    pub(super) next: BTreeMap<(String, i32), i64>,
    pub(super) oldest: Option<Instant>,
    pub(super) newest_ts_ms: i64,
}

impl ItemFollower {
    pub(super) fn mark_ready(&self) {
        if !self.status.is_ready() {
            info!(
                items = self.catalog.load().item_count(),
                "caught up with the item-vector topic; ready"
            );
        }
        self.status.set_ready();
    }

    /// Adds one item-metadata message's categories to the batch. Invalid ones were already
    /// dead-lettered by the trainer: here they are counted and skipped.
    pub(super) fn take_item(&self, msg: &BorrowedMessage<'_>, pending: &mut Pending) {
        pending
            .next
            .insert((msg.topic().to_owned(), msg.partition()), msg.offset() + 1);
        pending.oldest.get_or_insert_with(Instant::now);
        match msg.payload().map(|p| ItemMeta::from_json(p, 0)) {
            Some(Ok(meta)) => {
                pending.categories.insert(meta.item_id, meta.categories);
            }
            Some(Err(_)) | None => {
                self.status.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Adds one item-vector message to the batch.
    pub(super) fn take(&self, msg: &BorrowedMessage<'_>, pending: &mut Pending) {
        pending
            .next
            .insert((msg.topic().to_owned(), msg.partition()), msg.offset() + 1);
        pending.oldest.get_or_insert_with(Instant::now);
        let Some(key) = msg.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            self.status.rejected.fetch_add(1, Ordering::Relaxed);
            warn!(
                partition = msg.partition(),
                offset = msg.offset(),
                "item-vector message without a UTF-8 key; skipped"
            );
            return;
        };
        let change = match msg.payload() {
            None | Some([]) => None,
            Some(bytes) => match ItemVectorMessage::decode(bytes) {
                Ok(m) if m.generation != self.generation => {
                    self.status.other_generation.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(m) => {
                    pending.newest_ts_ms = pending.newest_ts_ms.max(m.ts_ms);
                    Some(m.vector)
                }
                Err(e) => {
                    self.status.rejected.fetch_add(1, Ordering::Relaxed);
                    warn!(
                        item = key,
                        partition = msg.partition(),
                        offset = msg.offset(),
                        error = %e,
                        "bad item-vector message; skipped"
                    );
                    return;
                }
            },
        };
        pending.changes.insert(key.to_owned(), change);
    }

    /// Swaps one batch in; on failure the batch is logged and dropped (the next snapshot
    /// or the next change of those items repairs it) and the replica keeps serving.
    pub(super) async fn apply(
        &self,
        pending: Pending,
        position: &mut BTreeMap<(String, i32), i64>,
    ) {
        if !pending.categories.is_empty() {
            let changes = pending.categories.into_iter().collect();
            if let Err(e) = self.catalog.set_categories(self.generation, changes) {
                error!(error = %e, "item categories not applied");
            }
        }
        let mut upserts = Vec::new();
        let mut removes = Vec::new();
        for (item, change) in pending.changes {
            match change {
                Some(v) => upserts.push((item, v)),
                None => removes.push(item),
            }
        }
        // One vector of the wrong dimension is that message's fault, not its batch's.
        let dim = self.catalog.load().index.as_ref().map(|i| i.dim());
        let (upserts, wrong) = split_by_dim(upserts, dim);
        for (item, v) in &wrong {
            warn!(
                item = %item,
                dim = v.len(),
                "item vector of the wrong dimension; skipped"
            );
        }
        self.status
            .rejected
            .fetch_add(wrong.len() as u64, Ordering::Relaxed);
        let count = (upserts.len() + removes.len()) as u64;
        let catalog = self.catalog.clone();
        let generation = self.generation;
        let result =
            tokio::task::spawn_blocking(move || catalog.apply_deltas(generation, upserts, removes))
                .await;
        match result {
            Ok(Ok(())) => {
                self.status.applied.fetch_add(count, Ordering::Relaxed);
                self.status.batches.fetch_add(1, Ordering::Relaxed);
                if pending.newest_ts_ms > 0 {
                    self.status
                        .last_delay_ms
                        .store(now_ms() - pending.newest_ts_ms, Ordering::Relaxed);
                }
            }
            Ok(Err(e)) => {
                self.status.dropped.fetch_add(count, Ordering::Relaxed);
                error!(error = %e, changes = count, "item-vector batch not applied; still serving the previous index, not ready until the next snapshot");
            }
            Err(e) => {
                self.status.dropped.fetch_add(count, Ordering::Relaxed);
                error!(error = %e, "item-vector apply task failed; not ready until the next snapshot");
            }
        }
        position.extend(pending.next);
    }

    pub(super) fn popular(&self, msg: &BorrowedMessage<'_>) {
        if msg.key() != Some(POPULAR_KEY.as_bytes()) {
            return;
        }
        let parsed = msg.payload().map(serde_json::from_slice::<PopularMessage>);
        match parsed {
            Some(Ok(m)) if m.generation == self.generation => {
                if let Err(e) = self.catalog.set_popular(m.generation, m.items) {
                    warn!(error = %e, "popular list not applied");
                }
            }
            Some(Ok(_)) => {
                self.status.other_generation.fetch_add(1, Ordering::Relaxed);
            }
            Some(Err(e)) => {
                self.status.rejected.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "bad popular-list message; skipped");
            }
            None => {}
        }
    }
}

/// Splits `upserts` into those of dimension `dim` (the index's; when the catalog has none
/// yet, the dimension most of them have) and the rest.
type Upserts = Vec<(String, Vec<f32>)>;
fn split_by_dim(upserts: Upserts, dim: Option<usize>) -> (Upserts, Upserts) {
    let dim = dim.or_else(|| {
        let mut counts: HashMap<usize, usize> = HashMap::new();
        for (_, v) in &upserts {
            *counts.entry(v.len()).or_default() += 1;
        }
        counts
            .into_iter()
            .max_by_key(|&(d, n)| (n, std::cmp::Reverse(d)))
            .map(|(d, _)| d)
    });
    upserts
        .into_iter()
        .partition(|(_, v)| Some(v.len()) == dim && !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_dimension_costs_only_its_own_change() {
        let up = |item: &str, d: usize| (item.to_owned(), vec![0.5; d]);
        let (good, bad) = split_by_dim(vec![up("a", 4), up("b", 3), up("c", 4)], Some(4));
        assert_eq!(good.len(), 2);
        assert_eq!(bad, vec![up("b", 3)]);
        // Without an index the batch's own majority decides, even when the odd one is
        // first.
        let (good, bad) = split_by_dim(vec![up("x", 8), up("a", 4), up("c", 4)], None);
        assert_eq!(
            good.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(),
            ["a", "c"]
        );
        assert_eq!(bad.len(), 1);
    }
}
