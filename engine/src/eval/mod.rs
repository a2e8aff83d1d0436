//! Evaluation: the offline protocol (`protocol.rs`: splits, full-ranking metrics,
//! rankers), the side-by-side comparison `recsys eval` runs (`compare.rs`), and the
//! synthetic generator's oracle (`oracle.rs`).

mod compare;
mod oracle;
mod protocol;

pub use compare::{EvalOptions, EvalReport, ModelName, ModelReport, run};
pub use protocol::{
    Catalog, K, Metrics, PopularityRanker, Ranker, Split, VectorRanker, evaluate, evaluate_model,
    leave_last_out,
};
