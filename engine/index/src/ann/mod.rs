//! The item index: FAISS through the `faiss` crate, inner product, ids = item rows.
//!
//! The kind is chosen by catalog size (docs/DESIGN.md §4): exact `IDMap2,Flat` for small
//! catalogs, `IVF,Flat` in the middle, `IVF,PQ…x4fs` (4-bit fast-scan PQ, which trains in
//! a fraction of a second where 8-bit PQ takes seconds to minutes) with exact re-ranking
//! above. The re-ranking is ours, against a copy of the raw vectors, rather than FAISS's
//! `RFlat`, because `IndexRefine` supports neither `add_with_ids` nor `remove_ids` and we
//! need both for deltas. FAISS's fast-scan `remove_ids` does not keep `ntotal` right, so
//! the live count is ours too.
//!
//! - `config.rs`: [`IndexConfig`] and the size-based factory choice;
//! - `item_index.rs`: the [`ItemIndex`] value, building, reading, writing, changing it;
//! - `search.rs`: searching with exclusions and the exact re-rank;
//! - `ffi.rs`: the FAISS C API called directly (shared searches, id selectors, OpenMP);
//! - `gpu.rs`: the `gpu` feature's GPU copy of the index.

mod config;
mod ffi;
#[cfg(feature = "gpu")]
mod gpu;
mod item_index;
mod search;

pub use config::IndexConfig;
pub use ffi::{FAISS_AVX2, check_cpu, single_threaded_searches};
pub use item_index::ItemIndex;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod timing;
