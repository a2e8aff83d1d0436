//! `recsys eval` on the terminal: the comparison itself is `recsys_engine::eval::run`,
//! the streaming evaluation `recsys_trainer::replay::run`.

use recsys_engine::eval::EvalReport;
use recsys_trainer::replay::{ArmReport, StreamReport};

/// Prints the report as a table on stderr-friendly stdout lines.
pub fn print(report: &EvalReport) {
    println!(
        "{} training events, {} users, {} items; {} test users (leave-last-out, full ranking)",
        report.train_events, report.users, report.items, report.test_users
    );
    println!(
        "{:<16} {:>8} {:>9} {:>8} {:>9} {:>9}",
        "model", "HR@10", "NDCG@10", "MRR", "coverage", "train_s"
    );
    let rows = [
        ("mf", report.mf),
        ("two_tower", report.two_tower),
        ("popularity", report.popularity),
        ("mf_online", report.mf_online),
        ("two_tower_online", report.two_tower_online),
        ("oracle", report.oracle),
    ];
    for (name, r) in rows {
        if let Some(r) = r {
            let m = r.metrics;
            println!(
                "{name:<16} {:>8.4} {:>9.4} {:>8.4} {:>9.4} {:>9.1}",
                m.hr_at_10, m.ndcg_at_10, m.mrr, m.coverage, r.train_s
            );
        }
    }
}

/// Prints a streaming evaluation: each arm over the whole stream, by user and item
/// group, per shard, and the sync-interval curve.
pub fn print_stream(r: &StreamReport) {
    println!(
        "{} base events, {} stream events ({} scored, {} repeats learnt but not scored), {} users, {} items; base trained in {:.1} s; replay {:.0} events/s",
        r.base_events,
        r.stream_events,
        r.scored_events,
        r.repeats_not_scored,
        r.users,
        r.items,
        r.base_train_s,
        r.replay_events_per_s
    );
    let arms: [(&str, &ArmReport); 4] = [
        ("frozen", &r.frozen),
        ("online", &r.online),
        ("online_scratch", &r.online_scratch),
        ("popularity", &r.popularity),
    ];
    println!(
        "{:<15} {:>7} {:>8} {:>7}   {:>13} {:>13} {:>13} {:>13}",
        "arm", "HR@10", "NDCG@10", "MRR", "known users", "new users", "new items", "2nd half"
    );
    for (name, a) in arms {
        println!(
            "{name:<15} {:>7.4} {:>8.4} {:>7.4}   {:>13.4} {:>13.4} {:>13.4} {:>13.4}",
            a.hr_at_10,
            a.ndcg_at_10,
            a.mrr,
            a.known_users.ndcg_at_10,
            a.new_users.ndcg_at_10,
            a.new_items.ndcg_at_10,
            a.second_half.ndcg_at_10
        );
    }
    println!(
        "(group columns are NDCG@10; events: known users {}, new users {}, new items {}, 2nd half {})",
        r.online.known_users.scored,
        r.online.new_users.scored,
        r.online.new_items.scored,
        r.online.second_half.scored
    );
    println!("NDCG@10 per shard:");
    for (name, a) in arms {
        let shards: Vec<String> = a
            .shards
            .iter()
            .map(|s| format!("{:.4}", s.ndcg_at_10))
            .collect();
        println!("  {name:<15} {}", shards.join(" "));
    }
    if !r.sync_curve.is_empty() {
        let points: Vec<String> = r
            .sync_curve
            .iter()
            .map(|p| format!("{} {:.4}", p.sync, p.ndcg_at_10))
            .collect();
        println!("online NDCG@10 by sync interval: {}", points.join(", "));
    }
}
