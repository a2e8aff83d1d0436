//! The retrain report for people: `report.md`.

use std::fmt::Write as _;

use recsys_engine::eval::Metrics;

use super::types::{RetrainOptions, RetrainReport};

fn row(name: &str, m: Option<&Metrics>) -> String {
    match m {
        Some(m) => format!(
            "| {name} | {:.4} | {:.4} | {:.4} | {:.4} |\n",
            m.hr_at_10, m.ndcg_at_10, m.mrr, m.coverage
        ),
        None => format!("| {name} | – | – | – | – |\n"),
    }
}

/// `report.md`: what was trained, on what, how long it took, how it compares, and
/// whether it was published and why.
pub(super) fn markdown(r: &RetrainReport, o: &RetrainOptions) -> String {
    let mut s = String::new();
    let verdict = if r.published {
        format!("**Published as generation {}.**", r.new_generation)
    } else {
        format!(
            "**Not published**: generation {} stays current.",
            r.current_generation.unwrap_or(0)
        )
    };
    let _ = writeln!(s, "# Retrain report\n\n{verdict} {}\n", r.decision);
    let als = r.model_kind == "Mf" && o.model.mf.recipe == recsys_engine::mf::Recipe::Als;
    let pass = if als { "sweep" } else { "epoch" };
    let _ = writeln!(s, "## What was trained\n");
    let _ = writeln!(
        s,
        "- Model: `{}`, {} {}, seed {}.",
        r.model_kind,
        r.epochs.len(),
        if als {
            "ALS sweep(s) (the loss is the weighted square loss per observed pair)".to_owned()
        } else {
            format!("epoch(s) in batches of {}", o.batch)
        },
        o.seed
    );
    let model_cfg = match r.model_kind.as_str() {
        "TwoTower" => serde_json::to_string(&o.model.two_tower),
        _ => serde_json::to_string(&o.model.mf),
    }
    .unwrap_or_default();
    let _ = writeln!(s, "- Settings: `{model_cfg}`.");
    let _ = writeln!(
        s,
        "- Data: archive `{}`, training days {} to {} ({} day(s)), {} events, {} users, {} items.",
        o.from.display(),
        r.train_days.first().map_or("-", String::as_str),
        r.train_days.last().map_or("-", String::as_str),
        r.train_days.len(),
        r.events,
        r.users,
        r.items
    );
    let _ = writeln!(
        s,
        "- Test: {} ({} users{}: each one's first item that day not already in their training data; full ranking over all items minus the user's training items).\n",
        r.test_day,
        r.test_users,
        if r.eligible_test_users > r.test_users {
            format!(
                ", a seeded sample of the {} eligible",
                r.eligible_test_users
            )
        } else {
            String::new()
        }
    );
    let _ = writeln!(s, "## How long it took\n");
    let _ = writeln!(
        s,
        "| {pass} | loss | events | seconds | events/s |\n|---:|---:|---:|---:|---:|"
    );
    for e in &r.epochs {
        let _ = writeln!(
            s,
            "| {} | {:.4} | {} | {:.1} | {:.0} |",
            e.epoch, e.loss, e.events, e.seconds, e.events_per_s
        );
    }
    let _ = writeln!(
        s,
        "\nTraining {:.1} s, whole run {:.1} s, mean {:.0} events/s, peak RSS {:.0} MiB.\n",
        r.train_seconds,
        r.total_seconds,
        r.events_per_s,
        r.peak_rss_bytes as f64 / 1048576.0
    );
    let _ = writeln!(s, "## Quality on the test day\n");
    let _ = writeln!(
        s,
        "| model | HR@10 | NDCG@10 | MRR | coverage |\n|---|---:|---:|---:|---:|"
    );
    s.push_str(&row(
        &format!("new (generation {})", r.new_generation),
        Some(&r.new),
    ));
    s.push_str(&row(
        &match r.current_generation {
            Some(g) => format!("current (generation {g})"),
            None => "current (none)".to_owned(),
        },
        r.current.as_ref(),
    ));
    s.push_str(&row("popularity", Some(&r.popularity)));
    let _ = writeln!(
        s,
        "\nQuality gate: publish if the new NDCG@10 is at least the current one minus {:.4}{}.\n",
        r.margin,
        if o.force {
            " (`--force` was given)"
        } else {
            ""
        }
    );
    if r.published {
        let _ = writeln!(s, "## What was published\n");
        let _ = writeln!(
            s,
            "- `{}`: the checkpoint (its offsets are the archive's committed offsets when the retrain started, so an online trainer following the models directory replays exactly what came after) and a base index snapshot built from the new item vectors.",
            recsys_index::generations::generation_dir(&o.models, r.new_generation).display()
        );
        let _ = writeln!(
            s,
            "- After the evaluation, the model was also trained on the test day ({}), so it has seen every archived event before the cutoff.",
            if als {
                format!("ALS sweeps again over every day, {} events", r.refit_events)
            } else {
                format!("{} events per epoch", r.refit_events)
            }
        );
        let _ = writeln!(
            s,
            "- {}",
            if r.users_written > 0 {
                format!(
                    "{} user vectors written under the generation's keys (`u:{}:{{user}}`) before the switch.",
                    r.users_written, r.new_generation
                )
            } else {
                "No user store was configured (`store.redis_url`): user vectors are written by the online trainer when it switches.".to_owned()
            }
        );
        let _ = writeln!(
            s,
            "- `CURRENT` now points at generation {}; `recsys rollback --models {}` switches back.\n",
            r.new_generation,
            o.models.display()
        );
    }
    let _ = writeln!(s, "## Plots\n");
    for p in &r.plots {
        match p.as_str() {
            "loss.png" => {
                let _ = writeln!(
                    s,
                    "- `loss.png`: mean training loss (y) per {pass} (x, 1 to {}), blue.",
                    r.epochs.len()
                );
            }
            "metrics.png" => {
                let _ = writeln!(
                    s,
                    "- `metrics.png`: HR@10 (left group) and NDCG@10 (right group); bars: new (blue), current (grey, absent when there is none), popularity (orange); the y axis runs from 0 to 1.15 × the largest value."
                );
            }
            other => {
                let _ = writeln!(s, "- `{other}`");
            }
        }
    }
    s
}
