//! Searching an [`ItemIndex`]: FAISS finds `k · rerank_factor` candidates (skipping
//! excluded ids with a per-thread bitmap selector), and the exact inner product against
//! the stored vectors re-ranks them.

use std::sync::atomic::Ordering;

use super::ffi::{search_shared, search_shared_keeping};
#[cfg(feature = "gpu")]
use super::gpu;
use super::item_index::ItemIndex;
use crate::vector::dot;
use crate::{IndexError, Result};

impl ItemIndex {
    /// Top-`k` items for `query`, best first, as `(id, inner product)`. Candidates are
    /// re-ranked by exact inner product against the stored vectors.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<(u64, f32)>> {
        Ok(self.search_batch(query, k)?.pop().unwrap_or_default())
    }

    /// [`ItemIndex::search`] for many queries (row-major, `n × dim`) in one FAISS call,
    /// which FAISS parallelises over the queries with OpenMP.
    pub fn search_batch(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<(u64, f32)>>> {
        if queries.is_empty() || !queries.len().is_multiple_of(self.dim) {
            return Err(IndexError::Index(format!(
                "queries hold {} values, not a positive multiple of the dimension {}",
                queries.len(),
                self.dim
            )));
        }
        let n = queries.len() / self.dim;
        if k == 0 || self.live == 0 {
            return Ok(vec![Vec::new(); n]);
        }
        let fetch = (k * self.rerank_factor).min(self.live);
        #[cfg(feature = "gpu")]
        let labels = match gpu::search(self, queries, n, fetch) {
            Some(labels) => labels?,
            None => search_shared(&self.inner, queries, n, fetch)?,
        };
        #[cfg(not(feature = "gpu"))]
        let labels = search_shared(&self.inner, queries, n, fetch)?;
        Ok(queries
            .chunks_exact(self.dim)
            .zip(labels.chunks_exact(fetch))
            .map(|(query, labels)| self.rerank(query, labels, k))
            .collect())
    }

    /// [`ItemIndex::search`] that never returns the ids in `exclude` (a user's recent
    /// items, the item a similar-items query starts from). FAISS skips them while it
    /// scans, so they take none of the `k · rerank_factor` candidates: the re-rank depth
    /// is the same as any query's, however many items are excluded. Asking for
    /// `k + exclude.len()` and dropping the excluded afterwards would score
    /// `(k + |exclude|) · rerank_factor` candidates: 120 instead of 80 for 10 items and
    /// 5 recent ones, and up to the whole probed lists for a user with 500.
    pub fn search_excluding(
        &self,
        query: &[f32],
        k: usize,
        exclude: &[u64],
    ) -> Result<Vec<(u64, f32)>> {
        if exclude.is_empty() {
            return self.search(query, k);
        }
        if query.len() != self.dim {
            return Err(IndexError::Index(format!(
                "query holds {} values, not the dimension {}",
                query.len(),
                self.dim
            )));
        }
        // The GPU copy takes no selector either.
        #[cfg(feature = "gpu")]
        let selectors = self.selectors.load(Ordering::Relaxed) && gpu::queue().is_none();
        #[cfg(not(feature = "gpu"))]
        let selectors = self.selectors.load(Ordering::Relaxed);
        if !selectors {
            return self.search_then_drop(query, k, exclude);
        }
        let kept = KEEP.with(|keep| {
            let mut keep = keep.borrow_mut();
            let bytes = self.present.len().div_ceil(8);
            if keep.len() < bytes {
                keep.resize(bytes, u8::MAX);
            }
            // Cleared for this search only; set again however it ends.
            let mut cleared = Cleared {
                bits: &mut keep,
                ids: Vec::with_capacity(exclude.len()),
            };
            let mut excluded_live = 0;
            for &id in exclude {
                if cleared.clear(id) && self.contains(id) {
                    excluded_live += 1;
                }
            }
            let fetch = (k * self.rerank_factor).min(self.live - excluded_live);
            if fetch == 0 {
                return Some(Vec::new());
            }
            let nprobe = self.factory.contains("IVF").then_some(self.nprobe);
            match search_shared_keeping(&self.inner, query, fetch, cleared.bits, nprobe) {
                Ok(labels) => Some(self.rerank(query, &labels, k)),
                Err(e) => {
                    tracing::warn!(
                        factory = %self.factory,
                        error = %e,
                        "FAISS takes no id selector for this index kind; excluded items are \
                         asked for on top and dropped"
                    );
                    self.selectors.store(false, Ordering::Relaxed);
                    None
                }
            }
        });
        match kept {
            Some(hits) => Ok(hits),
            None => self.search_then_drop(query, k, exclude),
        }
    }

    /// `k` best of the `k + exclude.len()` best that are not in `exclude`: exclusion
    /// without FAISS's help, at `(k + exclude.len()) · rerank_factor` candidates.
    pub(super) fn search_then_drop(
        &self,
        query: &[f32],
        k: usize,
        exclude: &[u64],
    ) -> Result<Vec<(u64, f32)>> {
        let exclude: std::collections::HashSet<u64> = exclude.iter().copied().collect();
        Ok(self
            .search(query, k + exclude.len())?
            .into_iter()
            .filter(|(id, _)| !exclude.contains(id))
            .take(k)
            .collect())
    }

    pub(super) fn rerank(&self, query: &[f32], labels: &[i64], k: usize) -> Vec<(u64, f32)> {
        self.prefetch(labels);
        let mut out: Vec<(u64, f32)> = labels
            .iter()
            .filter_map(|&l| u64::try_from(l).ok())
            .filter_map(|id| Some((id, dot(query, self.vector(id)?))))
            .collect();
        let best_first = |a: &(u64, f32), b: &(u64, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        // Select the k best in linear time and sort only those: the candidates are
        // k · rerank_factor, a full sort of them cost more than scoring them. An id is
        // in FAISS once (`present` guards every add), so there is nothing to deduplicate
        // beyond a defensive pass over the k kept.
        if out.len() > k && k > 0 {
            out.select_nth_unstable_by(k - 1, best_first);
            out.truncate(k);
        }
        out.sort_by(best_first);
        out.dedup_by_key(|x| x.0);
        out
    }

    /// Asks the CPU to start loading every candidate's stored vector before the first
    /// is scored. The candidates sit at random places in tens of megabytes of vectors, so
    /// each is a cache miss; scored one after another, the misses were waited out mostly
    /// one at a time (about 40 µs for 300 candidates of d = 64), while prefetched up
    /// front they overlap.
    #[allow(unsafe_code)]
    fn prefetch(&self, labels: &[i64]) {
        #[cfg(target_arch = "x86_64")]
        for &l in labels {
            let Ok(id) = usize::try_from(l) else { continue };
            let Some(row) = self.vectors.get(id * self.dim..(id + 1) * self.dim) else {
                continue;
            };
            // One hint per 64-byte cache line of the row.
            for line in row.chunks(16) {
                // SAFETY: a prefetch hint never faults and reads nothing into the program;
                // the pointer comes from a live slice anyway.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        line.as_ptr().cast(),
                    )
                };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = labels;
    }

    /// Exact top-`k` by brute force over the stored vectors: the reference for recall.
    pub fn exact_search(&self, query: &[f32], k: usize) -> Vec<(u64, f32)> {
        let mut all: Vec<(u64, f32)> = (0..self.present.len() as u64)
            .filter(|&id| self.contains(id))
            .map(|id| (id, dot(query, self.vector(id).unwrap_or_default())))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }
}

thread_local! {
    /// One bit per id, all set except while a search of this thread excludes some: the
    /// bitmap FAISS's selector reads in [`ItemIndex::search_excluding`]. Kept per thread,
    /// so excluding costs a bit per excluded id, not a bitmap per search.
    static KEEP: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Bits of [`KEEP`] cleared for one search, set again when it is dropped.
struct Cleared<'a> {
    bits: &'a mut Vec<u8>,
    ids: Vec<usize>,
}

impl Cleared<'_> {
    /// Clears `id`'s bit; whether it was set (a repeated id, or one past every id the
    /// index has held, is not).
    fn clear(&mut self, id: u64) -> bool {
        let Ok(id) = usize::try_from(id) else {
            return false;
        };
        let (byte, bit) = (id / 8, 1u8 << (id % 8));
        match self.bits.get_mut(byte) {
            Some(b) if *b & bit != 0 => {
                *b &= !bit;
                self.ids.push(id);
                true
            }
            _ => false,
        }
    }
}

impl Drop for Cleared<'_> {
    fn drop(&mut self) {
        for &id in &self.ids {
            self.bits[id / 8] |= 1 << (id % 8);
        }
    }
}
