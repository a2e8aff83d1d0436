//! The quality gate (publish the new generation or keep the current one, and why) and
//! `recsys rollback`.

use std::path::Path;

use recsys_engine::checkpoint;
use recsys_engine::eval::Metrics;
use recsys_index::generations::{self, Current, generation_dir};

use crate::{Result, TrainerError};

/// The gate's verdict.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Verdict {
    /// The gate passed.
    pub(super) pass: bool,
    /// Published: it passed, or `--force` overrode it.
    pub(super) published: bool,
    /// What was decided and why, for the report.
    pub(super) decision: String,
}

/// Publish if the new NDCG@10 is at least the current generation's minus `margin` (or
/// there is nothing to compare against), or when `force` says so.
pub(super) fn decide(
    new: &Metrics,
    current: Option<&Metrics>,
    current_generation: Option<u64>,
    margin: f64,
    force: bool,
) -> Verdict {
    let (pass, why) = match current {
        None => (
            true,
            match current_generation {
                None => "no current generation: the first one is published".to_owned(),
                Some(g) => {
                    format!("the current generation {g} has no checkpoint to compare against")
                }
            },
        ),
        Some(c) if new.ndcg_at_10 + margin >= c.ndcg_at_10 => (
            true,
            format!(
                "NDCG@10 {:.4} is within the margin {margin:.4} of the current {:.4} (or better)",
                new.ndcg_at_10, c.ndcg_at_10
            ),
        ),
        Some(c) => (
            false,
            format!(
                "NDCG@10 {:.4} is worse than the current {:.4} by more than the margin {margin:.4}",
                new.ndcg_at_10, c.ndcg_at_10
            ),
        ),
    };
    let decision = if !pass && force {
        tracing::warn!(%why, "quality gate overridden with --force");
        format!("published with --force although {why}")
    } else if pass {
        format!("published: {why}")
    } else {
        format!("kept generation {}: {why}", current_generation.unwrap_or(0))
    };
    Verdict {
        pass,
        published: pass || force,
        decision,
    }
}

/// `recsys rollback`: makes the previous generation current again.
pub fn rollback(models: &Path) -> Result<Current> {
    let Some(c) = generations::current(models)? else {
        return Err(TrainerError::Data(format!(
            "{}: no generation was ever published",
            models.display()
        )));
    };
    let Some(previous) = c.previous else {
        return Err(TrainerError::Data(format!(
            "generation {} has no previous generation to roll back to",
            c.generation
        )));
    };
    if checkpoint::list(&generation_dir(models, previous))?.is_empty() {
        return Err(TrainerError::Data(format!(
            "generation {previous} has no checkpoint left"
        )));
    }
    let back = Current {
        generation: previous,
        previous: Some(c.generation),
    };
    generations::set_current(models, back)?;
    Ok(back)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ndcg(x: f64) -> Metrics {
        Metrics {
            ndcg_at_10: x,
            ..Metrics::default()
        }
    }

    #[test]
    fn passes_within_the_margin_and_force_overrides() {
        let v = decide(&ndcg(0.099), Some(&ndcg(0.100)), Some(3), 0.002, false);
        assert!(v.pass && v.published, "{v:?}");
        let v = decide(&ndcg(0.090), Some(&ndcg(0.100)), Some(3), 0.002, false);
        assert!(!v.pass && !v.published);
        assert!(
            v.decision.starts_with("kept generation 3"),
            "{}",
            v.decision
        );
        let v = decide(&ndcg(0.090), Some(&ndcg(0.100)), Some(3), 0.002, true);
        assert!(!v.pass && v.published);
        assert!(v.decision.contains("--force"), "{}", v.decision);
        let v = decide(&ndcg(0.0), None, None, 0.002, false);
        assert!(v.pass && v.decision.contains("first one"), "{}", v.decision);
    }
}
