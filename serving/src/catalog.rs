//! The item catalog a replica serves: item ids, the FAISS index and the popular list of
//! one model generation, behind an atomically swappable handle. Writers build the next
//! version on a staging copy and swap it in whole, so a query never waits on a write and
//! never sees a half-applied batch.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use recsys_engine::ids::IdMap;
use recsys_engine::index::{IndexConfig, ItemIndex};

use crate::{Result, ServingError};

/// One immutable version of the catalog.
#[derive(Debug, Default)]
pub struct Catalog {
    pub generation: u64,
    /// Monotonic version, bumped by every swap.
    pub version: u64,
    /// Item id ↔ index id.
    pub ids: Arc<IdMap>,
    pub index: Option<Arc<ItemIndex>>,
    /// Most popular first, with scores relative to the top item.
    pub popular: Arc<Vec<(String, f32)>>,
}

impl Catalog {
    pub fn item_count(&self) -> usize {
        self.index.as_ref().map_or(0, |i| i.len())
    }
}

pub struct CatalogHolder {
    current: ArcSwap<Catalog>,
    writer: Mutex<()>,
    index_cfg: IndexConfig,
}

impl CatalogHolder {
    pub fn new(generation: u64, index_cfg: IndexConfig) -> Self {
        Self {
            current: ArcSwap::from_pointee(Catalog {
                generation,
                ..Catalog::default()
            }),
            writer: Mutex::new(()),
            index_cfg,
        }
    }

    /// The current version; cheap, lock-free.
    pub fn load(&self) -> Arc<Catalog> {
        self.current.load_full()
    }

    /// Upserts item vectors: a staging copy of the index takes the batch, then replaces
    /// the current one. The index is rebuilt (kind re-chosen, quantizers retrained) when
    /// the catalog has doubled since it was built.
    pub fn apply_items(&self, generation: u64, items: Vec<(String, Vec<f32>)>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.load();
        if generation != cur.generation {
            return Err(ServingError::BadRequest(format!(
                "item vectors of generation {generation} sent to a catalog of generation {}",
                cur.generation
            )));
        }
        let dim = items[0].1.len();
        if let Some(bad) = items.iter().find(|(_, v)| v.len() != dim) {
            return Err(ServingError::BadRequest(format!(
                "item {} has dimension {}, batch has {dim}",
                bad.0,
                bad.1.len()
            )));
        }
        let mut ids = cur.ids.clone();
        let mut batch_ids = Vec::with_capacity(items.len());
        let mut vectors = Vec::with_capacity(items.len() * dim);
        for (item, v) in &items {
            let row = match ids.get(item) {
                Some(r) => r,
                None => Arc::make_mut(&mut ids).get_or_insert(item),
            };
            batch_ids.push(u64::from(row));
            vectors.extend_from_slice(v);
        }
        let internal = |e: recsys_engine::EngineError| ServingError::Internal(e.to_string());
        let index = match cur.index.as_deref() {
            Some(old) if old.dim() != dim => {
                return Err(ServingError::BadRequest(format!(
                    "item vectors have dimension {dim}, the index has {}",
                    old.dim()
                )));
            }
            Some(old) if old.len() + items.len() <= 2 * old.built_for().max(1) => {
                let mut staging = old.try_clone().map_err(internal)?;
                staging.upsert(&batch_ids, &vectors).map_err(internal)?;
                staging
            }
            old => {
                // First build, or the catalog outgrew the structure: rebuild from all.
                let (mut all_ids, mut all_vectors) = old.map(ItemIndex::items).unwrap_or_default();
                let fresh: std::collections::HashSet<u64> = batch_ids.iter().copied().collect();
                let mut keep_ids = Vec::with_capacity(all_ids.len());
                let mut keep_vecs = Vec::with_capacity(all_vectors.len());
                for (k, id) in all_ids.drain(..).enumerate() {
                    if !fresh.contains(&id) {
                        keep_ids.push(id);
                        keep_vecs.extend_from_slice(&all_vectors[k * dim..(k + 1) * dim]);
                    }
                }
                all_vectors.clear();
                keep_ids.extend_from_slice(&batch_ids);
                keep_vecs.extend_from_slice(&vectors);
                ItemIndex::build(dim, &self.index_cfg, &keep_ids, &keep_vecs).map_err(internal)?
            }
        };
        self.current.store(Arc::new(Catalog {
            generation,
            version: cur.version + 1,
            ids,
            index: Some(Arc::new(index)),
            popular: cur.popular.clone(),
        }));
        Ok(())
    }

    /// Replaces the popular list.
    pub fn set_popular(&self, generation: u64, popular: Vec<(String, f32)>) -> Result<()> {
        let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.load();
        if generation != cur.generation {
            return Err(ServingError::BadRequest(format!(
                "popular list of generation {generation} sent to a catalog of generation {}",
                cur.generation
            )));
        }
        self.current.store(Arc::new(Catalog {
            generation,
            version: cur.version + 1,
            ids: cur.ids.clone(),
            index: cur.index.clone(),
            popular: Arc::new(popular),
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(x: f32) -> Vec<f32> {
        vec![x, 1.0, 0.0, 0.5]
    }

    #[test]
    fn applies_batches_as_new_versions() {
        let h = CatalogHolder::new(1, IndexConfig::default());
        let before = h.load();
        h.apply_items(1, vec![("a".into(), v(1.0)), ("b".into(), v(-1.0))])
            .unwrap();
        assert_eq!(before.item_count(), 0, "old versions are immutable");
        let c = h.load();
        assert_eq!(c.item_count(), 2);
        h.apply_items(1, vec![("a".into(), v(5.0)), ("c".into(), v(0.0))])
            .unwrap();
        let c2 = h.load();
        assert_eq!(c2.item_count(), 3);
        assert!(c2.version > c.version);
        let index = c2.index.as_ref().unwrap();
        let top = index.search(&[1.0, 0.0, 0.0, 0.0], 1).unwrap()[0].0;
        assert_eq!(c2.ids.id(top as u32), Some("a"));
        assert_eq!(c.item_count(), 2);
    }

    #[test]
    fn rejects_other_generation_and_dimension() {
        let h = CatalogHolder::new(1, IndexConfig::default());
        assert!(h.apply_items(2, vec![("a".into(), v(1.0))]).is_err());
        h.apply_items(1, vec![("a".into(), v(1.0))]).unwrap();
        assert!(h.apply_items(1, vec![("b".into(), vec![1.0])]).is_err());
        assert_eq!(h.load().item_count(), 1);
    }
}
