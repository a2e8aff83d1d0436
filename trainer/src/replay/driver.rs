//! The replay itself: batches of the stream scored, then learnt from, then published to
//! the arms that read each learner, each on its own sync interval.

use std::collections::{BTreeSet, HashMap, HashSet};

use recsys_engine::popularity::Popularity;
use recsys_index::ids::IdMap;
use recsys_index::store::MemoryUserStore;
use recsys_schemas::Event;

use super::arms::Evolving;
use super::served::Served;
use super::tally::{ArmReport, Groups, Tally};
use crate::Result;
use crate::prequential::rank_as_served;

/// How often an arm's view of its learner is refreshed, in event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sync {
    EveryBatch,
    EveryMs(i64),
    Never,
}

/// One arm: what serving holds, where its updates come from, how often.
pub(super) struct Arm {
    pub(super) name: String,
    pub(super) served: Served,
    /// Index of the learner it reads, if any.
    pub(super) learner: Option<usize>,
    pub(super) sync: Sync,
    pending_users: BTreeSet<String>,
    pending_items: BTreeSet<String>,
    last_sync_ts: i64,
    tally: Tally,
}

impl Arm {
    pub(super) fn new(name: &str, served: Served, learner: Option<usize>, sync: Sync) -> Self {
        Self {
            name: name.to_owned(),
            served,
            learner,
            sync,
            pending_users: BTreeSet::new(),
            pending_items: BTreeSet::new(),
            last_sync_ts: i64::MIN,
            tally: Tally::new(1),
        }
    }

    fn due(&self, now: i64) -> bool {
        match self.sync {
            Sync::EveryBatch => true,
            Sync::EveryMs(ms) => now.saturating_sub(self.last_sync_ts) >= ms,
            Sync::Never => false,
        }
    }
}

/// The shared state every arm reads, and the settings of the replay.
pub(super) struct Setup {
    /// Events per batch at most, and the event time a batch may span (ms): the online
    /// trainer's `batch_size` and `batch_timeout_ms`, with the log's timestamps as the
    /// moments its events would have arrived.
    pub(super) batch: usize,
    pub(super) batch_span_ms: i64,
    pub(super) history_len: usize,
    pub(super) popularity_half_life_ms: f64,
    pub(super) shards: usize,
    /// Stream positions to score; `None`: all.
    pub(super) scored: Option<HashSet<usize>>,
}

/// What the replay counted besides the arms' figures.
#[derive(Debug, Clone, Default)]
pub(super) struct Counts {
    pub(super) scored: usize,
    pub(super) repeats: usize,
    pub(super) users: usize,
    pub(super) items: usize,
}

/// Replays `stream` after `base` through `arms`, whose models evolve in `learners`.
pub(super) fn replay(
    setup: &Setup,
    base: &[Event],
    stream: &[Event],
    arms: &mut [Arm],
    learners: &mut [Box<dyn Evolving>],
    catalog: &mut IdMap,
) -> Result<(Vec<(String, ArmReport)>, Counts)> {
    let store = MemoryUserStore::new();
    let mut popularity = Popularity::new(setup.popularity_half_life_ms);
    let mut known_users: HashSet<&str> = HashSet::new();
    for e in base {
        let row = catalog.get_or_insert(&e.item_id);
        popularity.add(row, e.weight, e.ts);
        known_users.insert(&e.user_id);
    }
    push_histories(&store, base, setup.history_len);
    let base_items = catalog.len();
    let start = base.last().map_or(i64::MIN, |e| e.ts);
    for arm in arms.iter_mut() {
        arm.last_sync_ts = start;
        arm.tally = Tally::new(setup.shards);
    }
    let mut counts = Counts::default();
    let mut users: HashSet<&str> = known_users.clone();
    let n = stream.len().max(1);
    let mut first = 0usize;
    for batch in batches(stream, setup.batch, setup.batch_span_ms) {
        let offset = first;
        first += batch.len();
        for e in batch {
            catalog.get_or_insert(&e.item_id);
            users.insert(&e.user_id);
        }
        for (k, e) in batch.iter().enumerate() {
            let pos = offset + k;
            if setup.scored.as_ref().is_some_and(|s| !s.contains(&pos)) {
                continue;
            }
            let recent = store.get(0, &e.user_id).recent;
            if recent.iter().any(|i| i == e.item_id) {
                counts.repeats += 1;
                continue;
            }
            counts.scored += 1;
            let groups = Groups {
                known_user: known_users.contains(e.user_id.as_str()),
                new_item: catalog
                    .get(&e.item_id)
                    .is_none_or(|r| r as usize >= base_items),
                second_half: pos * 2 >= n,
                shard: pos * setup.shards.max(1) / n,
            };
            for arm in arms.iter_mut() {
                let ranked = rank_as_served(
                    &arm.served.with(catalog, &popularity),
                    arm.served.user(&e.user_id),
                    recent.iter(),
                    &e.item_id,
                );
                arm.tally.add(&ranked, groups);
            }
        }
        for learner in learners.iter_mut() {
            learner.train(batch.to_vec())?;
        }
        for e in batch {
            if let Some(row) = catalog.get(&e.item_id) {
                popularity.add(row, e.weight, e.ts);
            }
        }
        push_histories(&store, batch, setup.history_len);
        let now = batch.last().map_or(start, |e| e.ts);
        for (l, learner) in learners.iter_mut().enumerate() {
            let (changed_users, changed_items) = learner.take_changed();
            for arm in arms.iter_mut().filter(|a| a.learner == Some(l)) {
                arm.pending_users.extend(changed_users.iter().cloned());
                arm.pending_items.extend(changed_items.iter().cloned());
                if arm.due(now) {
                    let users: Vec<String> =
                        std::mem::take(&mut arm.pending_users).into_iter().collect();
                    let items: Vec<String> =
                        std::mem::take(&mut arm.pending_items).into_iter().collect();
                    arm.served.publish_users(learner.user_vectors(&users)?);
                    arm.served
                        .publish_items(learner.item_vectors(&items)?, catalog);
                    arm.last_sync_ts = now;
                }
            }
        }
    }
    counts.users = users.len();
    counts.items = catalog.len();
    Ok((
        arms.iter()
            .map(|a| (a.name.clone(), a.tally.report()))
            .collect(),
        counts,
    ))
}

/// `stream` cut as the online trainer cuts what it receives: a batch ends when it holds
/// `size` events or the next event comes `span_ms` or more after its first one.
pub(super) fn batches(stream: &[Event], size: usize, span_ms: i64) -> Vec<&[Event]> {
    let mut out = Vec::new();
    let mut start = 0;
    for k in 1..=stream.len() {
        let full = k - start >= size.max(1);
        let late = k < stream.len() && stream[k].ts - stream[start].ts >= span_ms;
        if k == stream.len() || full || late {
            out.push(&stream[start..k]);
            start = k;
        }
    }
    out
}

/// Each user's events of `events`, in order, moved to the front of their history.
fn push_histories(store: &MemoryUserStore, events: &[Event], history_len: usize) {
    let mut by_user: HashMap<&str, Vec<String>> = HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    for e in events {
        let items = by_user.entry(&e.user_id).or_insert_with(|| {
            order.push(&e.user_id);
            Vec::new()
        });
        items.push(e.item_id.clone());
    }
    for user in order {
        store.push_history(user, &by_user[user], history_len);
    }
}
