//! `recsys eval` on the terminal: the comparison itself is `recsys_engine::eval::run`.

use recsys_engine::eval::EvalReport;

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
