//! Offline training: passes over a fixed set of events in micro-batches, the recipe of the
//! nightly retrain and of `recsys eval`. Where the events come from is an
//! [`EventSource`]: data in memory, or the retrain's Parquet archive read on a second
//! thread.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use recsys_schemas::Event;
use serde::Serialize;

use crate::EngineError;
use crate::mf::Recipe;
use crate::model::Model;

/// Epochs of the step-based batch recipe (two-tower, or MF with `recipe = "epochs"`)
/// unless told otherwise: `retrain`, `eval` and the base of `eval --stream`. With MF's
/// step, means over seeds of NDCG@10 (docs/BENCHMARKS.md, "Choosing the defaults"):
/// MovieLens-100K 0.0742 / 0.0745 (file / shuffled tie order) at 10 passes, 0.0763 /
/// 0.0813 at 20; Wikipedia edits 0.824 and 0.828; the generator 0.118 and 0.116.
pub const DEFAULT_EPOCHS: usize = 20;

/// ALS sweeps of MF's default batch recipe unless told otherwise (implicit's default
/// too): the loss has stopped moving by then.
pub const DEFAULT_SWEEPS: usize = 15;

/// Passes of `model`'s batch recipe unless told otherwise.
pub fn default_passes(model: &Model) -> usize {
    if solves_whole_history(model) {
        DEFAULT_SWEEPS
    } else {
        DEFAULT_EPOCHS
    }
}

/// One pass over the training events.
#[derive(Debug, Clone, Serialize)]
pub struct EpochStats {
    pub epoch: usize,
    /// Mean loss of the pass's steps (those with a finite loss).
    pub loss: f64,
    pub events: u64,
    pub seconds: f64,
    pub events_per_s: f64,
}

/// How many passes, how large a step, and whether each read batch is shuffled first
/// (epochs are; the online regime's single pass keeps time order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochPlan {
    pub epochs: usize,
    pub batch: usize,
    pub shuffle: bool,
}

/// A sink of [`EventSource::pass_borrowed`]: reads a read batch, or stops the pass.
pub type ReadSink<'a, E> = dyn FnMut(&[Event]) -> Result<(), E> + 'a;

/// Where a pass's events come from, handed over in read batches.
pub trait EventSource {
    type Error: From<EngineError>;

    /// Calls `sink` with every event of one pass, a read batch at a time, and stops at the
    /// first error `sink` returns.
    fn pass(
        &mut self,
        sink: &mut dyn FnMut(Vec<Event>) -> Result<(), Self::Error>,
    ) -> Result<(), Self::Error>;

    /// [`Self::pass`] for a sink that only reads the events (a source that holds them
    /// need not copy them).
    fn pass_borrowed(&mut self, sink: &mut ReadSink<'_, Self::Error>) -> Result<(), Self::Error> {
        self.pass(&mut |batch| sink(&batch))
    }
}

/// Events in memory: each pass is one read batch holding all of them.
#[derive(Debug, Clone, Copy)]
pub struct InMemory<'a>(pub &'a [Event]);

impl EventSource for InMemory<'_> {
    type Error = EngineError;

    fn pass(&mut self, sink: &mut dyn FnMut(Vec<Event>) -> crate::Result<()>) -> crate::Result<()> {
        sink(self.0.to_vec())
    }

    fn pass_borrowed(&mut self, sink: &mut ReadSink<'_, EngineError>) -> crate::Result<()> {
        sink(self.0)
    }
}

/// Told about training as it goes (a progress bar, say); every method does nothing unless
/// overridden.
pub trait Progress {
    /// Pass `epoch` (1-based) of `epochs` starts.
    fn epoch(&mut self, _epoch: usize, _epochs: usize) {}
    /// A step of `events` events was trained.
    fn step(&mut self, _events: usize) {}
    /// A read batch is done; `mean_loss` is the pass's so far.
    fn batch_done(&mut self, _mean_loss: f64) {}
}

impl Progress for () {}

/// The batch recipe: `plan.epochs` ALS sweeps over `source` for an MF model whose
/// recipe is [`Recipe::Als`] (one pass reads the pairs), else [`train_epochs`].
pub fn fit_batch<S: EventSource + ?Sized>(
    model: &mut Model,
    source: &mut S,
    plan: &EpochPlan,
    rng: &mut StdRng,
    progress: &mut dyn Progress,
) -> Result<Vec<EpochStats>, S::Error> {
    if !solves_whole_history(model) {
        return train_epochs(model, source, plan, rng, progress);
    }
    let Model::Mf(mf) = model else {
        unreachable!("only MF solves by ALS")
    };
    // The solve is over exactly these events: the item counts become theirs.
    mf.forget_frequencies();
    let mut pairs = Vec::new();
    source.pass_borrowed(&mut |batch| {
        pairs.extend(mf.register_pairs(batch));
        Ok(())
    })?;
    let events = pairs.len() as u64;
    let mut epochs = Vec::with_capacity(plan.epochs);
    let mut started = Instant::now();
    progress.epoch(1, plan.epochs);
    mf.fit_als(pairs, plan.epochs, &mut |sweep| {
        let seconds = started.elapsed().as_secs_f64();
        progress.step(events as usize);
        progress.batch_done(sweep.loss);
        tracing::info!(
            sweep = sweep.iteration,
            loss = sweep.loss,
            seconds,
            "ALS sweep done"
        );
        epochs.push(EpochStats {
            epoch: sweep.iteration,
            loss: sweep.loss,
            events,
            seconds,
            events_per_s: events as f64 / seconds.max(1e-9),
        });
        if sweep.iteration < plan.epochs {
            progress.epoch(sweep.iteration + 1, plan.epochs);
        }
        started = Instant::now();
    })?;
    Ok(epochs)
}

/// Whether [`fit_batch`] solves each row against all of its events (ALS), so that adding
/// events means fitting over all of them again rather than over the new ones only.
pub fn solves_whole_history(model: &Model) -> bool {
    matches!(model, Model::Mf(m) if m.config().recipe == Recipe::Als)
}

/// `plan.epochs` passes over `source`, each read batch shuffled with `rng` when
/// `plan.shuffle`, trained in steps of `plan.batch` events.
pub fn train_epochs<S: EventSource + ?Sized>(
    model: &mut Model,
    source: &mut S,
    plan: &EpochPlan,
    rng: &mut StdRng,
    progress: &mut dyn Progress,
) -> Result<Vec<EpochStats>, S::Error> {
    let mut epochs = Vec::with_capacity(plan.epochs);
    for epoch in 1..=plan.epochs {
        progress.epoch(epoch, plan.epochs);
        let started = Instant::now();
        let (mut loss, mut steps, mut seen) = (0.0f64, 0u64, 0u64);
        source.pass(&mut |mut batch| {
            if plan.shuffle {
                batch.shuffle(rng);
            }
            for chunk in batch.chunks(plan.batch.max(1)) {
                let (s, _, _) = model.train_events(chunk)?;
                if s.loss.is_finite() {
                    loss += f64::from(s.loss);
                    steps += 1;
                }
                seen += chunk.len() as u64;
                progress.step(chunk.len());
            }
            progress.batch_done(loss / steps.max(1) as f64);
            Ok(())
        })?;
        let seconds = started.elapsed().as_secs_f64();
        let stats = EpochStats {
            epoch,
            loss: loss / steps.max(1) as f64,
            events: seen,
            seconds,
            events_per_s: seen as f64 / seconds.max(1e-9),
        };
        tracing::info!(
            epoch = stats.epoch,
            loss = stats.loss,
            events_per_s = stats.events_per_s,
            "epoch done"
        );
        epochs.push(stats);
    }
    Ok(epochs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::cpu_autodiff_device;
    use crate::model::ModelConfig;
    use rand::SeedableRng;

    fn events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|k| Event {
                user_id: format!("u{}", k % 13),
                item_id: format!("i{}", k % 7),
                kind: "click".into(),
                weight: 1.0,
                ts: k as i64,
                event_id: None,
            })
            .collect()
    }

    #[test]
    fn every_event_is_trained_once_per_epoch_and_loss_falls() {
        let data = events(500);
        let mut model = Model::new(&ModelConfig::default(), cpu_autodiff_device()).unwrap();
        let plan = EpochPlan {
            epochs: 4,
            batch: 64,
            shuffle: true,
        };
        let mut rng = StdRng::seed_from_u64(1);
        let stats =
            train_epochs(&mut model, &mut InMemory(&data), &plan, &mut rng, &mut ()).unwrap();
        assert_eq!(stats.len(), 4);
        assert!(stats.iter().all(|s| s.events == 500));
        assert!(stats[3].loss < stats[0].loss, "{stats:?}");
        assert_eq!(model.user_ids().len(), 13);
    }

    #[test]
    fn a_small_batch_under_a_nominal_batch_moves_trained_rows_by_its_share() {
        use crate::mf::{MfConfig, MfModel, Recipe};
        let cfg = ModelConfig {
            mf: MfConfig {
                recipe: Recipe::Epochs,
                ..MfConfig::default()
            },
            ..ModelConfig::default()
        };
        let mut base = Model::new(&cfg, cpu_autodiff_device()).unwrap();
        let plan = EpochPlan {
            epochs: 3,
            batch: 64,
            shuffle: true,
        };
        let mut rng = StdRng::seed_from_u64(3);
        train_epochs(
            &mut base,
            &mut InMemory(&events(500)),
            &plan,
            &mut rng,
            &mut (),
        )
        .unwrap();
        let Model::Mf(base) = base else {
            unreachable!("an MF model was made")
        };
        // Three events: two of trained users, one of a user never seen.
        let mut batch = events(2);
        batch.push(Event {
            user_id: "fresh".into(),
            ..batch[0].clone()
        });
        let moved = |nominal: f32| {
            let mut m = MfModel::from_parts(base.to_parts(), cpu_autodiff_device()).unwrap();
            m.set_nominal_batch(nominal);
            m.train_events(&batch).unwrap();
            let shift = |id: &str| {
                let before = base.user_vector(id).unwrap();
                let after = m.user_vector(id).unwrap();
                before
                    .iter()
                    .zip(after)
                    .map(|(a, b)| (a - b).powi(2))
                    .sum::<f32>()
                    .sqrt()
            };
            (shift("u0"), m.user_vector("fresh").unwrap().to_vec())
        };
        let (plain, fresh_plain) = moved(0.0);
        let (scaled, fresh_scaled) = moved(1024.0);
        assert!(plain > 0.0 && scaled > 0.0, "{plain} {scaled}");
        // 3/1024 of the step, give or take the accumulator's own change.
        let ratio = scaled / plain;
        assert!(
            ratio < 0.01,
            "a trained row moved {ratio} of the plain step"
        );
        // A fresh row's first step is scale-free under Adagrad: the same either way, but
        // for Adagrad's ε beside a gradient 3/1024 as large.
        for (a, b) in fresh_plain.iter().zip(&fresh_scaled) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
    }

    #[test]
    fn the_same_seed_trains_the_same_model() {
        let data = events(300);
        let plan = EpochPlan {
            epochs: 2,
            batch: 50,
            shuffle: true,
        };
        let train = || {
            let mut model = Model::new(&ModelConfig::default(), cpu_autodiff_device()).unwrap();
            let mut rng = StdRng::seed_from_u64(9);
            train_epochs(&mut model, &mut InMemory(&data), &plan, &mut rng, &mut ()).unwrap();
            model.user_vectors(&[0, 1, 2]).unwrap()
        };
        assert_eq!(train(), train());
    }
}
