//! The item catalog a replica serves: item ids, the FAISS index and the popular list of
//! one model generation, behind an atomically swappable handle. Writers build the next
//! version on a staging copy and swap it in whole, so a query never waits on a write and
//! never sees a half-applied batch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use recsys_index::ids::IdMap;
use recsys_index::{IndexConfig, ItemIndex};

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
    /// Categories of the items that have any (from the `items` topic).
    pub categories: Arc<HashMap<String, Vec<String>>>,
}

impl Catalog {
    pub fn item_count(&self) -> usize {
        self.index.as_ref().map_or(0, |i| i.len())
    }

    /// Whether `item` carries `category`.
    pub fn in_category(&self, item: &str, category: &str) -> bool {
        self.categories
            .get(item)
            .is_some_and(|c| c.iter().any(|x| x == category))
    }
}

pub struct CatalogHolder {
    current: ArcSwap<Catalog>,
    writer: Mutex<()>,
    index_cfg: IndexConfig,
    rebuild_growth: f64,
}

impl CatalogHolder {
    /// `index_cfg.rebuild_growth` sets when the index is rebuilt.
    pub fn new(generation: u64, index_cfg: IndexConfig) -> Self {
        Self {
            rebuild_growth: index_cfg.rebuild_growth,
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

    pub fn index_config(&self) -> &IndexConfig {
        &self.index_cfg
    }

    /// Upserts item vectors (no removals); see [`CatalogHolder::apply_deltas`].
    pub fn apply_items(&self, generation: u64, items: Vec<(String, Vec<f32>)>) -> Result<()> {
        self.apply_deltas(generation, items, Vec::new())
    }

    /// Applies one batch of deltas: `upserts` then `removes` (the caller has already
    /// collapsed the batch to the last change per item, so the two sets are disjoint). A
    /// staging copy of the index takes the batch, then replaces the current one. The
    /// index is rebuilt (kind re-chosen, quantizers retrained on the current vectors)
    /// when the catalog has grown past `rebuild_growth` × the size it was built for.
    pub fn apply_deltas(
        &self,
        generation: u64,
        upserts: Vec<(String, Vec<f32>)>,
        removes: Vec<String>,
    ) -> Result<()> {
        if upserts.is_empty() && removes.is_empty() {
            return Ok(());
        }
        let (_guard, cur) = self.begin(generation, "item vectors")?;
        let dim = match (upserts.first(), cur.index.as_deref()) {
            (Some((_, v)), _) => v.len(),
            (None, Some(old)) => old.dim(),
            // Removals from an empty catalog: nothing to do.
            (None, None) => return Ok(()),
        };
        if let Some(bad) = upserts.iter().find(|(_, v)| v.len() != dim) {
            return Err(ServingError::BadRequest(format!(
                "item {} has dimension {}, batch has {dim}",
                bad.0,
                bad.1.len()
            )));
        }
        if let Some(old) = cur.index.as_deref()
            && old.dim() != dim
        {
            return Err(ServingError::BadRequest(format!(
                "item vectors have dimension {dim}, the index has {}",
                old.dim()
            )));
        }
        let mut ids = cur.ids.clone();
        let mut batch_ids = Vec::with_capacity(upserts.len());
        let mut vectors = Vec::with_capacity(upserts.len() * dim);
        for (item, v) in &upserts {
            let row = match ids.get(item) {
                Some(r) => r,
                None => Arc::make_mut(&mut ids).get_or_insert(item),
            };
            batch_ids.push(u64::from(row));
            vectors.extend_from_slice(v);
        }
        let removed: Vec<u64> = removes
            .iter()
            .filter_map(|item| ids.get(item).map(u64::from))
            .collect();
        let internal = |e: recsys_index::IndexError| ServingError::Internal(e.to_string());
        let grown_past = |old: &ItemIndex| {
            let added = batch_ids.iter().filter(|&&id| !old.contains(id)).count();
            (old.len() + added) as f64 > self.rebuild_growth * old.built_for().max(1) as f64
        };
        let index = match cur.index.as_deref() {
            Some(old) if !grown_past(old) => {
                let mut staging = old.try_clone().map_err(internal)?;
                staging.upsert(&batch_ids, &vectors).map_err(internal)?;
                staging.remove(&removed).map_err(internal)?;
                staging
            }
            old => {
                // First build, or the catalog outgrew the structure: rebuild from all.
                let (all_ids, all_vectors) = old.map(ItemIndex::items).unwrap_or_default();
                let gone: std::collections::HashSet<u64> =
                    batch_ids.iter().chain(&removed).copied().collect();
                let mut keep_ids = Vec::with_capacity(all_ids.len() + batch_ids.len());
                let mut keep_vecs = Vec::with_capacity(all_vectors.len() + vectors.len());
                for (k, &id) in all_ids.iter().enumerate() {
                    if !gone.contains(&id) {
                        keep_ids.push(id);
                        keep_vecs.extend_from_slice(&all_vectors[k * dim..(k + 1) * dim]);
                    }
                }
                drop(all_vectors);
                keep_ids.extend_from_slice(&batch_ids);
                keep_vecs.extend_from_slice(&vectors);
                if keep_ids.is_empty() {
                    return Ok(());
                }
                ItemIndex::build(dim, &self.index_cfg, &keep_ids, &keep_vecs).map_err(internal)?
            }
        };
        self.swap(&cur, ids, Some(Arc::new(index)), cur.popular.clone());
        Ok(())
    }

    /// Replaces ids and index with a loaded base snapshot of the current generation
    /// (the popular list stays).
    pub fn install(&self, generation: u64, ids: IdMap, index: ItemIndex) -> Result<()> {
        let (_guard, cur) = self.begin(generation, "snapshot")?;
        self.swap(
            &cur,
            Arc::new(ids),
            Some(Arc::new(index)),
            cur.popular.clone(),
        );
        Ok(())
    }

    /// Switches to another generation in one step: its ids and index (a base snapshot,
    /// or none) replace the current ones together with the generation number, so a query
    /// sees either the old generation or the new one, with the user-key prefix to match.
    /// The popular list and the categories stay until the new generation sends its own.
    pub fn switch(&self, generation: u64, ids: IdMap, index: Option<ItemIndex>) {
        let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.load();
        self.current.store(Arc::new(Catalog {
            generation,
            ids: Arc::new(ids),
            index: index.map(Arc::new),
            ..self.next(&cur)
        }));
    }

    /// Replaces the popular list.
    pub fn set_popular(&self, generation: u64, popular: Vec<(String, f32)>) -> Result<()> {
        let (_guard, cur) = self.begin(generation, "popular list")?;
        self.swap(&cur, cur.ids.clone(), cur.index.clone(), Arc::new(popular));
        Ok(())
    }

    /// Takes the writer lock and the current version, refusing a change made for another
    /// generation.
    fn begin(&self, generation: u64, what: &str) -> Result<(MutexGuard<'_, ()>, Arc<Catalog>)> {
        let guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.load();
        if generation != cur.generation {
            return Err(ServingError::BadRequest(format!(
                "{what} of generation {generation} sent to a catalog of generation {}",
                cur.generation
            )));
        }
        Ok((guard, cur))
    }

    /// Replaces the categories of the given items (an empty list removes them).
    pub fn set_categories(
        &self,
        generation: u64,
        changes: Vec<(String, Vec<String>)>,
    ) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let (_guard, cur) = self.begin(generation, "item categories")?;
        let mut categories = cur.categories.clone();
        let map = Arc::make_mut(&mut categories);
        for (item, cats) in changes {
            if cats.is_empty() {
                map.remove(&item);
            } else {
                map.insert(item, cats);
            }
        }
        self.current.store(Arc::new(Catalog {
            categories,
            ..self.next(&cur)
        }));
        Ok(())
    }

    /// The version after `cur`, sharing all of its parts.
    fn next(&self, cur: &Catalog) -> Catalog {
        Catalog {
            generation: cur.generation,
            version: cur.version + 1,
            ids: cur.ids.clone(),
            index: cur.index.clone(),
            popular: cur.popular.clone(),
            categories: cur.categories.clone(),
        }
    }

    /// Stores the version after `cur` (call with the writer lock held).
    fn swap(
        &self,
        cur: &Catalog,
        ids: Arc<IdMap>,
        index: Option<Arc<ItemIndex>>,
        popular: Arc<Vec<(String, f32)>>,
    ) {
        self.current.store(Arc::new(Catalog {
            ids,
            index,
            popular,
            ..self.next(cur)
        }));
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
    fn switch_changes_generation_and_index_together() {
        let h = CatalogHolder::new(1, IndexConfig::default());
        h.apply_items(1, vec![("a".into(), v(1.0))]).unwrap();
        h.set_popular(1, vec![("a".into(), 1.0)]).unwrap();
        let mut ids = IdMap::new();
        let row = ids.get_or_insert("b");
        let index =
            ItemIndex::build(4, &IndexConfig::default(), &[u64::from(row)], &v(2.0)).unwrap();
        h.switch(2, ids, Some(index));
        let c = h.load();
        assert_eq!((c.generation, c.item_count()), (2, 1));
        assert_eq!(c.ids.get("b"), Some(row));
        assert_eq!(c.ids.get("a"), None);
        assert_eq!(
            c.popular.len(),
            1,
            "the popular list stays until the new one arrives"
        );
        // Writers of the old generation are refused from now on.
        assert!(h.apply_items(1, vec![("c".into(), v(0.0))]).is_err());
        h.apply_items(2, vec![("c".into(), v(0.0))]).unwrap();
        assert_eq!(h.load().item_count(), 2);
    }

    #[test]
    fn removals_and_growth_rebuilds() {
        let h = CatalogHolder::new(1, IndexConfig::default());
        h.apply_items(1, vec![("a".into(), v(1.0)), ("b".into(), v(-1.0))])
            .unwrap();
        h.apply_deltas(1, vec![("c".into(), v(2.0))], vec!["a".into(), "zz".into()])
            .unwrap();
        let c = h.load();
        let index = c.index.as_ref().unwrap();
        assert_eq!(index.len(), 2);
        assert!(!index.contains(u64::from(c.ids.get("a").unwrap())));
        // Past twice the built-for size the structure is rebuilt, removals included.
        let many: Vec<(String, Vec<f32>)> =
            (0..10).map(|i| (format!("n{i}"), v(i as f32))).collect();
        h.apply_deltas(1, many, vec!["b".into()]).unwrap();
        let c = h.load();
        let index = c.index.as_ref().unwrap();
        assert_eq!(index.len(), 11);
        assert_eq!(index.built_for(), 11);
        assert!(!index.contains(u64::from(c.ids.get("b").unwrap())));
    }

    /// Readers search without pause while 50 batches are swapped in. Every batch moves
    /// every item to a vector whose score against the query is the batch number, so an
    /// answer mixing two versions would show two different scores.
    #[test]
    fn queries_during_swaps_see_exactly_one_version() {
        let items = 300;
        let batch = |version: f32| -> Vec<(String, Vec<f32>)> {
            (0..items)
                .map(|i| (format!("i{i}"), vec![version, i as f32, 0.0, 0.0]))
                .collect()
        };
        let h = Arc::new(CatalogHolder::new(1, IndexConfig::default()));
        h.apply_items(1, batch(1.0)).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (h, stop) = (h.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut answers = 0;
                    let mut versions = std::collections::BTreeSet::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let c = h.load();
                        let index = c.index.as_ref().unwrap();
                        let hits = index.search(&[1.0, 0.0, 0.0, 0.0], 50).unwrap();
                        assert_eq!(hits.len(), 50);
                        let v = hits[0].1;
                        assert!(hits.iter().all(|x| x.1 == v), "mixed versions: {hits:?}");
                        assert_eq!(v, c.version as f32, "answer from another version");
                        versions.insert(v as u64);
                        answers += 1;
                    }
                    (answers, versions.len())
                })
            })
            .collect();
        for version in 2..=51 {
            h.apply_items(1, batch(version as f32)).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in readers {
            let (answers, versions) = r.join().expect("a reader failed");
            assert!(
                answers > 0 && versions > 1,
                "{answers} answers, {versions} versions"
            );
        }
        assert_eq!(h.load().version, 51);
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
