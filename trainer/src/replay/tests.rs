//! The protocol's guarantees: nothing is scored by a model that has learnt from it, and
//! an online arm that cannot learn serves exactly what the frozen one does.

use std::collections::{HashMap, HashSet};

use recsys_engine::synth::SynthConfig;
use recsys_index::ids::IdMap;
use recsys_schemas::Event;

use super::arms::Evolving;
use super::driver::{Arm, Setup, Sync, replay};
use super::served::Served;
use super::*;

/// A model that remembers every (user, item) it learnt from and nothing else: its user
/// vector is the one-hot sum of the user's items, an item's vector its one-hot. It
/// ranks a pair it learnt first, and knows nothing of the rest.
struct Memoriser {
    items: IdMap,
    dim: usize,
    learnt: HashMap<String, HashSet<u32>>,
    changed: (HashSet<String>, HashSet<String>),
}

impl Evolving for Memoriser {
    fn dim(&self) -> usize {
        self.dim
    }

    fn train(&mut self, batch: Vec<Event>) -> crate::Result<()> {
        for e in batch {
            let row = self.items.get_or_insert(&e.item_id);
            self.learnt
                .entry(e.user_id.clone())
                .or_default()
                .insert(row);
            self.changed.0.insert(e.user_id);
            self.changed.1.insert(e.item_id);
        }
        Ok(())
    }

    fn take_changed(&mut self) -> (Vec<String>, Vec<String>) {
        let (u, i) = std::mem::take(&mut self.changed);
        (u.into_iter().collect(), i.into_iter().collect())
    }

    fn user_vectors(&self, ids: &[String]) -> crate::Result<super::arms::Vectors> {
        Ok(ids
            .iter()
            .map(|id| {
                let mut v = vec![0.0; self.dim];
                for &r in &self.learnt[id] {
                    v[r as usize] = 1.0;
                }
                (id.clone(), v)
            })
            .collect())
    }

    fn item_vectors(&self, ids: &[String]) -> crate::Result<super::arms::Vectors> {
        Ok(ids
            .iter()
            .map(|id| {
                let mut v = vec![0.0; self.dim];
                v[self.items.get(id).unwrap() as usize] = 1.0;
                (id.clone(), v)
            })
            .collect())
    }

    fn train_seconds(&self) -> f64 {
        0.0
    }
}

#[test]
fn no_event_is_scored_by_a_model_that_learnt_from_it() {
    // 30 users, 300 items, every item once: a model that scores what it learnt would
    // rank every event first if it had learnt the event before scoring it.
    let events: Vec<Event> = (0..300)
        .map(|k| Event {
            user_id: format!("u{}", k % 30),
            item_id: format!("i{k}"),
            kind: "click".into(),
            weight: 1.0,
            ts: k as i64,
            event_id: None,
        })
        .collect();
    let (base, stream) = events.split_at(60);
    let mut learners: Vec<Box<dyn Evolving>> = vec![Box::new(Memoriser {
        items: IdMap::new(),
        dim: 300,
        learnt: HashMap::new(),
        changed: Default::default(),
    })];
    learners[0].train(base.to_vec()).unwrap();
    let mut catalog = IdMap::new();
    let mut start = Served::new(300);
    let (u, i) = learners[0].take_changed();
    start.publish_users(learners[0].user_vectors(&u).unwrap());
    start.publish_items(learners[0].item_vectors(&i).unwrap(), &mut catalog);
    let setup = Setup {
        batch: 16,
        batch_span_ms: i64::MAX,
        history_len: 500,
        popularity_half_life_ms: 1e12,
        shards: 4,
        scored: None,
    };
    let mut arms = vec![Arm::new("memoriser", start, Some(0), Sync::EveryBatch)];
    let (reports, counts) =
        replay(&setup, base, stream, &mut arms, &mut learners, &mut catalog).unwrap();
    assert_eq!(counts.scored, stream.len());
    let r = &reports[0].1;
    assert_eq!(r.scored, stream.len());
    assert_eq!((r.hr_at_10, r.ndcg_at_10), (0.0, 0.0), "{r:?}");
}

fn small_options() -> ReplayOptions {
    let mut opts = ReplayOptions {
        base_epochs: Some(2),
        shards: 3,
        sync_curve: false,
        ..ReplayOptions::default()
    };
    opts.model.mf.dim = 16;
    opts.trainer.batch_size = 256;
    opts
}

fn small_log() -> Vec<Event> {
    SynthConfig {
        users: 300,
        items: 200,
        events: 12_000,
        clusters: 8,
        days: 4,
        drift: 0.2,
        new_items: 0.1,
        seed: 3,
        ..SynthConfig::default()
    }
    .generate()
    .unwrap()
    .all_events()
}

#[test]
fn an_online_arm_that_cannot_learn_serves_what_the_frozen_one_does() {
    let events = small_log();
    // No step moves a row and no refit solves a user: the online arm cannot learn.
    let mut still = ReplayOptions {
        online_learning_rate: Some(0.0),
        ..small_options()
    };
    still.trainer.refit_alpha = 0.0;
    let frozen_online = run(&events, &still).unwrap();
    assert!(frozen_online.scored_events > 1000);
    assert_eq!(frozen_online.online, frozen_online.frozen);
    // And learning does change what it serves.
    let learning = run(&events, &small_options()).unwrap();
    assert_ne!(learning.online, learning.frozen);
    assert_eq!(
        learning.frozen, frozen_online.frozen,
        "the same base both times"
    );
    for arm in [&learning.frozen, &learning.online, &learning.popularity] {
        assert_eq!(arm.shards.len(), 3);
        assert!(arm.ndcg_at_10 > 0.0 && arm.ndcg_at_10 < 1.0, "{arm:?}");
    }
}

#[test]
fn sync_intervals_make_a_curve_between_every_batch_and_frozen() {
    let report = run(
        &small_log(),
        &ReplayOptions {
            sync_curve: true,
            ..small_options()
        },
    )
    .unwrap();
    let names: Vec<&str> = report.sync_curve.iter().map(|p| p.sync.as_str()).collect();
    assert_eq!(names, ["every batch", "1 min", "1 h", "1 day", "frozen"]);
    assert_eq!(report.sync_curve[0].ndcg_at_10, report.online.ndcg_at_10);
    assert_eq!(report.sync_curve[4].ndcg_at_10, report.frozen.ndcg_at_10);
    assert!(report.replay_events_per_s > 0.0);
}

#[test]
fn batches_close_when_full_or_when_their_time_is_up() {
    let at = |ts: &[i64]| -> Vec<Event> {
        ts.iter()
            .map(|&ts| Event {
                user_id: "u".into(),
                item_id: "i".into(),
                kind: "click".into(),
                weight: 1.0,
                ts,
                event_id: None,
            })
            .collect()
    };
    let sizes = |events: &[Event], size, span| -> Vec<usize> {
        super::driver::batches(events, size, span)
            .iter()
            .map(|b| b.len())
            .collect()
    };
    let e = at(&[0, 10, 150, 199, 200, 205, 900, 901, 902]);
    assert_eq!(sizes(&e, 1024, 200), [4, 2, 3]);
    assert_eq!(sizes(&e, 2, 200), [2, 2, 2, 2, 1]);
    assert_eq!(sizes(&e, 1024, i64::MAX), [9]);
    assert!(super::driver::batches(&[], 4, 200).is_empty());
}
