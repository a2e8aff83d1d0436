//! Index settings and the size-based choice of the FAISS factory string.

use serde::{Deserialize, Serialize};

use crate::{IndexError, Result};

/// How the index is built. Every field has a size-based default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexConfig {
    /// FAISS factory string overriding the size-based choice, e.g. `"IVF256,PQ64x4fs"`.
    pub factory: Option<String>,
    /// Catalogs below this size use an exact flat index.
    pub flat_below: usize,
    /// Catalogs below this size (and at least `flat_below`) use IVF-flat; above, IVF-PQ.
    pub ivf_flat_below: usize,
    /// Inverted lists probed per query (IVF kinds), of the 2·√n the size-based factory
    /// makes. On the trained vectors of a 10M-event retrain (100k items, 632 lists,
    /// `recsys bench index --checkpoint`), Recall@10 at 8 / 10 probes: IVF-flat 0.9973 /
    /// 0.9992, IVF-PQ re-ranked ×8 0.9948 / 0.9964.
    pub nprobe: usize,
    /// IVF-PQ fetches `k · rerank_factor` candidates and re-ranks them exactly. On the
    /// same trained vectors at 10 probes, Recall@10 of the default `PQ64x4fs` was 0.9893
    /// at 5, 0.9931 at 6, 0.9964 at 8 and 0.9977 at 10; each candidate costs FAISS's
    /// selection and one exact dot product.
    pub rerank_factor: usize,
    /// A replica rebuilds the index (kind re-chosen, quantizers retrained) once the
    /// catalog has grown past this factor of the size it was built for.
    pub rebuild_growth: f64,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            factory: None,
            flat_below: 20_000,
            // IVF-flat keeps the best recall on trained vectors (0.9992 against 0.9964 for
            // IVF-PQ + re-rank 8 at 100k, `bench index --checkpoint`). On the generic
            // FAISS build it was also 3.7× faster at 1M; with AVX2, IVF-PQ + re-rank is
            // faster there on synthetic data (13,349 against 6,923 single-thread
            // searches/s at 1M) at 57% of the memory (the raw vectors kept for re-ranking
            // dominate), so a memory- or CPU-bound catalog may lower this.
            ivf_flat_below: 2_000_000,
            nprobe: 10,
            rerank_factor: 8,
            rebuild_growth: 2.0,
        }
    }
}

impl IndexConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: &str| Err(IndexError::Config(format!("index.{key}: {why}")));
        if self.nprobe == 0 {
            return bad("nprobe", "must be at least 1");
        }
        if self.rerank_factor == 0 {
            return bad("rerank_factor", "must be at least 1");
        }
        if self.rebuild_growth.is_nan() || self.rebuild_growth <= 1.0 {
            return bad("rebuild_growth", "must be above 1");
        }
        if self.ivf_flat_below < self.flat_below {
            return bad("ivf_flat_below", "must not be below flat_below");
        }
        if let Some(f) = &self.factory
            && f.contains("RFlat")
        {
            return bad(
                "factory",
                "RFlat cannot add or remove by id; re-ranking is built in (rerank_factor)",
            );
        }
        Ok(())
    }

    /// The factory string for a catalog of `n` items of dimension `dim`.
    pub fn factory_for(&self, n: usize, dim: usize) -> String {
        if let Some(f) = &self.factory {
            return f.clone();
        }
        // 2·√n lists, but never fewer than 40 items per list: FAISS's k-means wants 39
        // training points per centroid. Against 4·√n lists probed 16 at a time, 2·√n
        // probed 10 at a time scans about as many items with half the centroids to rank
        // per query. On the trained vectors of a 10M-event retrain (100k items,
        // `bench index --checkpoint`), IVF-PQ re-ranked ×10 reaches Recall@10 0.9977
        // against 0.9890 (fast-scan's 8-bit lookup tables lose less over fewer lists),
        // IVF-flat 0.9992 against 0.9995, and single-thread searches are faster.
        let nlist = (2.0 * (n as f64).sqrt())
            .min(n as f64 / 40.0)
            .round()
            .clamp(16.0, 65_536.0) as usize;
        if n < self.flat_below {
            "IDMap2,Flat".into()
        } else if n < self.ivf_flat_below {
            format!("IVF{nlist},Flat")
        } else {
            // One dimension per 4-bit sub-quantizer: 32 bytes per item at d = 64, beside
            // the 256 bytes of the raw vector kept for re-ranking. On the trained vectors
            // above, two dimensions per sub-quantizer (16 bytes) needed a re-rank factor
            // of 30 to reach the Recall@10 this reaches at 10 (0.988 against 0.989), and
            // searched at half the speed.
            format!("IVF{nlist},PQ{}x4fs", dim.max(1))
        }
    }
}

/// Inverted lists of an `IVF<n>,…` factory string.
pub(super) fn ivf_lists(factory: &str) -> Option<usize> {
    let rest = factory.strip_prefix("IVF")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}
