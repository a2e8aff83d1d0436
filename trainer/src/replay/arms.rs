//! The models the replay evolves. [`Evolving`] is what the driver needs of one: learn
//! from a batch, say which vectors changed, hand them over. [`OnlineLearner`] is the
//! online trainer's own per-batch logic ([`Learner::train`], the function the Kafka
//! loop calls), so the replay measures what production does.

use std::collections::HashSet;
use std::time::Instant;

use recsys_engine::model::Model;
use recsys_schemas::Event;

use crate::online::learner::Learner;
use crate::online::stats::TrainerStats;
use crate::{Result, TrainerConfig};

/// `(id, vector)` pairs.
pub type Vectors = Vec<(String, Vec<f32>)>;

/// A model that learns from the stream as it goes.
pub trait Evolving {
    fn dim(&self) -> usize;
    /// Learns from one batch, after the batch has been scored.
    fn train(&mut self, batch: Vec<Event>) -> Result<()>;
    /// The users and items whose vectors changed since the last call.
    fn take_changed(&mut self) -> (Vec<String>, Vec<String>);
    /// The current vectors of those of `ids` that have one.
    fn user_vectors(&self, ids: &[String]) -> Result<Vectors>;
    fn item_vectors(&self, ids: &[String]) -> Result<Vectors>;
    /// Seconds spent learning so far.
    fn train_seconds(&self) -> f64;
}

/// The online trainer's learner: admission, the step, popularity, the rows to publish.
pub struct OnlineLearner {
    learner: Learner,
    stats: TrainerStats,
    seconds: f64,
}

impl OnlineLearner {
    /// The learner the trainer runs, on `model` (the base, or a fresh one).
    pub fn new(cfg: &TrainerConfig, model: Model) -> Self {
        Self {
            learner: Learner::new(cfg, model),
            stats: TrainerStats::default(),
            seconds: 0.0,
        }
    }

    /// Adds past events to the learner's popularity (what the trainer counted before).
    pub fn count_popularity(&mut self, events: &[Event]) {
        let learner = &mut self.learner;
        for e in events {
            if let Some(row) = learner.model.item_ids().get(&e.item_id) {
                learner.popularity.add(row, e.weight, e.ts);
            }
        }
    }

    pub fn model(&self) -> &Model {
        &self.learner.model
    }

    pub fn stats(&self) -> &TrainerStats {
        &self.stats
    }
}

impl Evolving for OnlineLearner {
    fn dim(&self) -> usize {
        self.learner.model.dim()
    }

    fn train(&mut self, batch: Vec<Event>) -> Result<()> {
        let started = Instant::now();
        self.learner.train(batch, &self.stats)?;
        self.seconds += started.elapsed().as_secs_f64();
        Ok(())
    }

    fn take_changed(&mut self) -> (Vec<String>, Vec<String>) {
        let dirty = std::mem::take(&mut self.learner.dirty);
        let m = &self.learner.model;
        let ids = |rows: HashSet<u32>, map: &recsys_index::ids::IdMap| -> Vec<String> {
            let mut rows: Vec<u32> = rows.into_iter().collect();
            rows.sort_unstable();
            rows.into_iter()
                .filter_map(|r| map.id(r).map(str::to_owned))
                .collect()
        };
        (
            ids(dirty.users, m.user_ids()),
            ids(dirty.items, m.item_ids()),
        )
    }

    fn user_vectors(&self, ids: &[String]) -> Result<Vectors> {
        let m = &self.learner.model;
        vectors(
            ids,
            |id| m.user_ids().get(id),
            |rows| m.user_vectors(rows),
            m.dim(),
        )
    }

    fn item_vectors(&self, ids: &[String]) -> Result<Vectors> {
        let m = &self.learner.model;
        vectors(
            ids,
            |id| m.item_ids().get(id),
            |rows| m.item_vectors(rows),
            m.dim(),
        )
    }

    fn train_seconds(&self) -> f64 {
        self.seconds
    }
}

/// `(id, vector)` of those of `ids` whose row `row_of` knows.
fn vectors(
    ids: &[String],
    row_of: impl Fn(&str) -> Option<u32>,
    of_rows: impl Fn(&[u32]) -> recsys_engine::Result<Vec<f32>>,
    dim: usize,
) -> Result<Vectors> {
    let (known, rows): (Vec<&String>, Vec<u32>) =
        ids.iter().filter_map(|id| Some((id, row_of(id)?))).unzip();
    let flat = of_rows(&rows)?;
    Ok(known
        .into_iter()
        .zip(flat.chunks_exact(dim))
        .map(|(id, v)| (id.clone(), v.to_vec()))
        .collect())
}

/// Every live user's and item's vector of `model`, as a retrain publishes a generation.
pub(super) fn everything(model: &Model) -> Result<(Vectors, Vectors)> {
    let all = |map: &recsys_index::ids::IdMap| -> Vec<String> {
        map.ids()
            .iter()
            .filter(|id| !id.is_empty())
            .cloned()
            .collect()
    };
    let users = vectors(
        &all(model.user_ids()),
        |id| model.user_ids().get(id),
        |rows| model.user_vectors(rows),
        model.dim(),
    )?;
    let items = vectors(
        &all(model.item_ids()),
        |id| model.item_ids().get(id),
        |rows| model.item_vectors(rows),
        model.dim(),
    )?;
    Ok((users, items))
}
