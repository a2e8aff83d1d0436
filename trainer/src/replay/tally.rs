//! The figures of one arm: HR@10, NDCG@10 and MRR over the whole stream, over users the
//! base knew and users first seen in the stream, over events of items first seen in the
//! stream, over the stream's second half, and per shard.

use serde::Serialize;

use crate::prequential::Ranked;

const K: usize = 10;

/// Means over a set of scored events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StreamMetrics {
    pub hr_at_10: f64,
    pub ndcg_at_10: f64,
    pub mrr: f64,
    /// Events scored.
    pub scored: usize,
}

#[derive(Debug, Clone, Copy, Default)]
struct Sum {
    hr: f64,
    ndcg: f64,
    mrr: f64,
    n: usize,
}

impl Sum {
    fn add(&mut self, r: &Ranked) {
        let (hr, ndcg, mrr) = r.gains(K);
        self.hr += hr;
        self.ndcg += ndcg;
        self.mrr += mrr;
        self.n += 1;
    }

    fn metrics(&self) -> StreamMetrics {
        let n = self.n.max(1) as f64;
        StreamMetrics {
            hr_at_10: self.hr / n,
            ndcg_at_10: self.ndcg / n,
            mrr: self.mrr / n,
            scored: self.n,
        }
    }
}

/// Which groups a scored event belongs to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Groups {
    pub(super) known_user: bool,
    pub(super) new_item: bool,
    pub(super) second_half: bool,
    pub(super) shard: usize,
}

/// The running sums of one arm.
#[derive(Debug, Clone)]
pub(super) struct Tally {
    all: Sum,
    known_users: Sum,
    new_users: Sum,
    new_items: Sum,
    second_half: Sum,
    shards: Vec<Sum>,
}

impl Tally {
    pub(super) fn new(shards: usize) -> Self {
        Self {
            all: Sum::default(),
            known_users: Sum::default(),
            new_users: Sum::default(),
            new_items: Sum::default(),
            second_half: Sum::default(),
            shards: vec![Sum::default(); shards.max(1)],
        }
    }

    pub(super) fn add(&mut self, r: &Ranked, g: Groups) {
        self.all.add(r);
        if g.known_user {
            self.known_users.add(r);
        } else {
            self.new_users.add(r);
        }
        if g.new_item {
            self.new_items.add(r);
        }
        if g.second_half {
            self.second_half.add(r);
        }
        let last = self.shards.len() - 1;
        self.shards[g.shard.min(last)].add(r);
    }

    pub(super) fn report(&self) -> ArmReport {
        let m = self.all.metrics();
        ArmReport {
            hr_at_10: m.hr_at_10,
            ndcg_at_10: m.ndcg_at_10,
            mrr: m.mrr,
            scored: m.scored,
            known_users: self.known_users.metrics(),
            new_users: self.new_users.metrics(),
            new_items: self.new_items.metrics(),
            second_half: self.second_half.metrics(),
            shards: self.shards.iter().map(Sum::metrics).collect(),
        }
    }
}

/// One arm's figures over the stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ArmReport {
    pub hr_at_10: f64,
    pub ndcg_at_10: f64,
    pub mrr: f64,
    pub scored: usize,
    /// Events of users the base period knew, and of users first seen in the stream.
    pub known_users: StreamMetrics,
    pub new_users: StreamMetrics,
    /// Events whose item was first seen in the stream (a frozen model cannot rank them).
    pub new_items: StreamMetrics,
    /// The later half of the stream.
    pub second_half: StreamMetrics,
    /// Per chronological shard.
    pub shards: Vec<StreamMetrics>,
}
