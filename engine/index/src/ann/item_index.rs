//! The [`ItemIndex`] value: a FAISS structure keyed by item row beside the raw vectors,
//! how it is built, read, written and changed. Searching is in `search.rs`.

use std::sync::atomic::AtomicBool;

use faiss::index::autotune::ParameterSpace;
use faiss::index::{IndexImpl, TryClone};
use faiss::selector::IdSelector;
use faiss::{Idx, Index, MetricType, index_factory};

use super::config::{IndexConfig, ivf_lists};
use super::ffi::faiss_err;
use crate::{IndexError, Result};

/// A FAISS index over item vectors keyed by item row, with our own exact re-ranking.
pub struct ItemIndex {
    pub(super) dim: usize,
    pub(super) factory: String,
    pub(super) rerank_factor: usize,
    pub(super) nprobe: usize,
    /// Written only through `&mut self` (a published index is never written: writers
    /// work on a staging clone), searched concurrently through [`search_shared`].
    pub(super) inner: IndexImpl,
    /// Raw vectors by id (row-major), for re-ranking and fold-in.
    pub(super) vectors: Vec<f32>,
    pub(super) present: Vec<bool>,
    pub(super) live: usize,
    /// Items when the FAISS structure was built (its quantizers fit that size).
    pub(super) built_for: usize,
    /// Unique per state of the FAISS structure: a fresh value on every build, clone,
    /// read and write, so a cached GPU copy can tell it is stale.
    pub(super) uid: u64,
    /// Whether FAISS takes an id selector for this kind (false once it refused one:
    /// plain PQ and LSH do); without, [`ItemIndex::search_excluding`] asks for the
    /// excluded on top and drops them.
    pub(super) selectors: AtomicBool,
}

fn next_uid() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl std::fmt::Debug for ItemIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemIndex")
            .field("dim", &self.dim)
            .field("factory", &self.factory)
            .field("live", &self.live)
            .finish()
    }
}

impl ItemIndex {
    /// Builds an index over `ids` / `vectors` (row-major, `ids.len() × dim`), training
    /// IVF quantizers on a deterministic sample of the vectors.
    pub fn build(dim: usize, cfg: &IndexConfig, ids: &[u64], vectors: &[f32]) -> Result<Self> {
        cfg.validate()?;
        if vectors.len() != ids.len() * dim {
            return Err(IndexError::Index(format!(
                "{} ids but {} values at dimension {dim}",
                ids.len(),
                vectors.len()
            )));
        }
        let factory = cfg.factory_for(ids.len(), dim);
        let mut inner =
            index_factory(dim as u32, &factory, MetricType::InnerProduct).map_err(faiss_err)?;
        if !inner.is_trained() {
            if ids.is_empty() {
                return Err(IndexError::Index(format!(
                    "{factory} needs training vectors, got none"
                )));
            }
            // FAISS's k-means wants at least 39 training points per centroid.
            let sample = ivf_lists(&factory).map_or(50_000, |n| (40 * n).max(50_000));
            inner
                .train(&training_sample(vectors, dim, sample))
                .map_err(faiss_err)?;
        }
        let mut index = Self {
            dim,
            rerank_factor: if factory.contains("PQ") {
                cfg.rerank_factor
            } else {
                1
            },
            nprobe: cfg.nprobe,
            factory,
            inner,
            vectors: Vec::new(),
            present: Vec::new(),
            live: 0,
            built_for: ids.len(),
            uid: next_uid(),
            selectors: AtomicBool::new(true),
        };
        index.set_nprobe()?;
        index.upsert(ids, vectors)?;
        Ok(index)
    }

    fn set_nprobe(&mut self) -> Result<()> {
        if self.factory.contains("IVF") {
            self.uid = next_uid();
            let inner = &mut self.inner;
            ParameterSpace::new()
                .and_then(|ps| ps.set_index_parameter(inner, "nprobe", self.nprobe as f64))
                .map_err(faiss_err)?;
        }
        Ok(())
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The same index with another re-rank depth (1 = none). Only PQ kinds re-rank.
    pub fn with_rerank_factor(mut self, rerank_factor: usize) -> Self {
        if self.factory.contains("PQ") {
            self.rerank_factor = rerank_factor.max(1);
        }
        self
    }

    pub fn factory(&self) -> &str {
        &self.factory
    }

    /// Items currently searchable.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn contains(&self, id: u64) -> bool {
        self.present.get(id as usize).copied().unwrap_or(false)
    }

    /// The stored vector of `id`.
    pub fn vector(&self, id: u64) -> Option<&[f32]> {
        self.contains(id).then(|| {
            let s = id as usize * self.dim;
            &self.vectors[s..s + self.dim]
        })
    }

    /// Items the index held when it was built; a catalog grown far past it deserves a
    /// rebuild (new kind, retrained quantizers).
    pub fn built_for(&self) -> usize {
        self.built_for
    }

    /// A deep copy (FAISS `clone_index`), used as the staging copy for a batch of changes.
    pub fn try_clone(&self) -> Result<Self> {
        let inner = self.inner.try_clone().map_err(faiss_err)?;
        Ok(Self {
            dim: self.dim,
            factory: self.factory.clone(),
            rerank_factor: self.rerank_factor,
            nprobe: self.nprobe,
            inner,
            vectors: self.vectors.clone(),
            present: self.present.clone(),
            live: self.live,
            built_for: self.built_for,
            uid: next_uid(),
            selectors: AtomicBool::new(true),
        })
    }

    /// Writes the FAISS structure with FAISS's own `write_index`.
    pub fn write_faiss(&self, path: &std::path::Path) -> Result<()> {
        let p = path
            .to_str()
            .ok_or_else(|| IndexError::Index(format!("{} is not UTF-8", path.display())))?;
        faiss::write_index(&self.inner, p).map_err(faiss_err)
    }

    /// Reads a FAISS structure written by [`ItemIndex::write_faiss`] and pairs it with the
    /// raw vectors of its live `ids` (row-major). Checks what FAISS reports against what
    /// the caller expects: dimension, metric, and at least as many vectors as live items
    /// (fast-scan PQ keeps removed slots counted).
    pub fn read_faiss(
        path: &std::path::Path,
        dim: usize,
        factory: &str,
        cfg: &IndexConfig,
        built_for: usize,
        ids: &[u64],
        vectors: Vec<f32>,
    ) -> Result<Self> {
        let p = path
            .to_str()
            .ok_or_else(|| IndexError::Index(format!("{} is not UTF-8", path.display())))?;
        let inner = faiss::read_index(p).map_err(faiss_err)?;
        if inner.d() as usize != dim {
            return Err(IndexError::Index(format!(
                "FAISS file has dimension {}, expected {dim}",
                inner.d()
            )));
        }
        if inner.metric_type() != MetricType::InnerProduct {
            return Err(IndexError::Index(
                "FAISS file does not use the inner-product metric".into(),
            ));
        }
        if (inner.ntotal() as usize) < ids.len() {
            return Err(IndexError::Index(format!(
                "FAISS file holds {} vectors for {} items",
                inner.ntotal(),
                ids.len()
            )));
        }
        if vectors.len() != ids.len() * dim || vectors.iter().any(|x| !x.is_finite()) {
            return Err(IndexError::Index(
                "raw vectors do not match the items or are not finite".into(),
            ));
        }
        let rows = ids.iter().max().map_or(0, |&m| m as usize + 1);
        let mut index = Self {
            dim,
            factory: factory.to_owned(),
            rerank_factor: if factory.contains("PQ") {
                cfg.rerank_factor
            } else {
                1
            },
            nprobe: cfg.nprobe,
            inner,
            vectors: vec![0.0; rows * dim],
            present: vec![false; rows],
            live: 0,
            built_for,
            uid: next_uid(),
            selectors: AtomicBool::new(true),
        };
        for (k, &id) in ids.iter().enumerate() {
            let s = id as usize * dim;
            index.vectors[s..s + dim].copy_from_slice(&vectors[k * dim..(k + 1) * dim]);
            if !index.present[id as usize] {
                index.present[id as usize] = true;
                index.live += 1;
            }
        }
        index.set_nprobe()?;
        Ok(index)
    }

    /// Every stored item: ids and their vectors, row-major.
    pub fn items(&self) -> (Vec<u64>, Vec<f32>) {
        let ids: Vec<u64> = (0..self.present.len() as u64)
            .filter(|&id| self.contains(id))
            .collect();
        let vectors = ids
            .iter()
            .flat_map(|&id| self.vector(id).unwrap_or_default().iter().copied())
            .collect();
        (ids, vectors)
    }

    /// Adds items, replacing those already present.
    pub fn upsert(&mut self, ids: &[u64], vectors: &[f32]) -> Result<()> {
        if vectors.len() != ids.len() * self.dim {
            return Err(IndexError::Index(format!(
                "{} ids but {} values at dimension {}",
                ids.len(),
                vectors.len(),
                self.dim
            )));
        }
        if vectors.iter().any(|x| !x.is_finite()) {
            return Err(IndexError::Index("refusing non-finite item vectors".into()));
        }
        self.remove(ids)?;
        if ids.is_empty() {
            return Ok(());
        }
        let faiss_ids: Vec<Idx> = ids.iter().map(|&i| Idx::new(i)).collect();
        self.uid = next_uid();
        self.inner
            .add_with_ids(vectors, &faiss_ids)
            .map_err(faiss_err)?;
        let max = *ids.iter().max().unwrap_or(&0) as usize;
        if max >= self.present.len() {
            self.present.resize(max + 1, false);
            self.vectors.resize((max + 1) * self.dim, 0.0);
        }
        for (k, &id) in ids.iter().enumerate() {
            let s = id as usize * self.dim;
            self.vectors[s..s + self.dim]
                .copy_from_slice(&vectors[k * self.dim..(k + 1) * self.dim]);
            if !self.present[id as usize] {
                self.present[id as usize] = true;
                self.live += 1;
            }
        }
        Ok(())
    }

    /// Removes the given ids (absent ones are ignored); returns how many were present.
    pub fn remove(&mut self, ids: &[u64]) -> Result<usize> {
        let mut present: Vec<u64> = ids.iter().copied().filter(|&i| self.contains(i)).collect();
        present.sort_unstable();
        present.dedup();
        if present.is_empty() {
            return Ok(0);
        }
        let faiss_ids: Vec<Idx> = present.iter().map(|&i| Idx::new(i)).collect();
        let selector = IdSelector::batch(&faiss_ids).map_err(faiss_err)?;
        self.uid = next_uid();
        self.inner.remove_ids(&selector).map_err(faiss_err)?;
        for &id in &present {
            self.present[id as usize] = false;
        }
        self.live -= present.len();
        Ok(present.len())
    }

    /// Bytes of the FAISS structure, measured as its serialised size (codes, ids,
    /// quantizers): what `write_index` writes is what it holds in memory, give or take
    /// allocator slack.
    pub fn faiss_bytes(&self) -> Result<usize> {
        let path = std::env::temp_dir().join(format!(
            "recsys-index-size-{}-{:p}",
            std::process::id(),
            self
        ));
        self.write_faiss(&path)?;
        let size = std::fs::metadata(&path).map(|m| m.len() as usize);
        let _ = std::fs::remove_file(&path);
        size.map_err(|e| IndexError::Index(e.to_string()))
    }

    /// Bytes of the raw vectors and presence map kept beside FAISS for exact re-ranking,
    /// fold-in and rebuilds.
    pub fn raw_bytes(&self) -> usize {
        self.vectors.len() * 4 + self.present.len()
    }
}

/// Every `n / max`-th vector, so training is deterministic and bounded.
fn training_sample(vectors: &[f32], dim: usize, max: usize) -> Vec<f32> {
    let n = vectors.len() / dim;
    if n <= max {
        return vectors.to_vec();
    }
    let stride = n as f64 / max as f64;
    (0..max)
        .flat_map(|k| {
            let row = (k as f64 * stride) as usize;
            vectors[row * dim..(row + 1) * dim].iter().copied()
        })
        .collect()
}
