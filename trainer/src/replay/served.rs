//! What serving holds for one arm of the replay: the user and item vectors a trainer has
//! published, item vectors by the replay's catalog rows. Read through
//! [`ServedState`] with the shared catalog and popularity.

use std::collections::HashMap;

use recsys_engine::popularity::Popularity;
use recsys_index::ids::IdMap;

use crate::prequential::ServedState;

/// Published vectors of one arm.
#[derive(Debug, Clone, Default)]
pub(super) struct Served {
    dim: usize,
    users: HashMap<String, Vec<f32>>,
    /// Catalog rows × `dim`.
    items: Vec<f32>,
    has: Vec<bool>,
}

impl Served {
    pub(super) fn new(dim: usize) -> Self {
        Self {
            dim,
            ..Self::default()
        }
    }

    pub(super) fn user(&self, id: &str) -> Option<&[f32]> {
        self.users.get(id).map(Vec::as_slice)
    }

    fn set_item(&mut self, row: u32, v: &[f32]) {
        let r = row as usize;
        if r >= self.has.len() {
            self.has.resize(r + 1, false);
            self.items.resize((r + 1) * self.dim, 0.0);
        }
        self.items[r * self.dim..(r + 1) * self.dim].copy_from_slice(v);
        self.has[r] = true;
    }

    /// Publishes user vectors by id.
    pub(super) fn publish_users(&mut self, users: Vec<(String, Vec<f32>)>) {
        for (id, v) in users {
            self.users.insert(id, v);
        }
    }

    /// Publishes item vectors by id (new ids join the catalog).
    pub(super) fn publish_items(&mut self, items: Vec<(String, Vec<f32>)>, catalog: &mut IdMap) {
        for (id, v) in items {
            let row = catalog.get_or_insert(&id);
            self.set_item(row, &v);
        }
    }

    /// This view read with the replay's catalog and popular list.
    pub(super) fn with<'a>(
        &'a self,
        catalog: &'a IdMap,
        popularity: &'a Popularity,
    ) -> impl ServedState + 'a {
        View {
            served: self,
            catalog,
            popularity,
        }
    }
}

struct View<'a> {
    served: &'a Served,
    catalog: &'a IdMap,
    popularity: &'a Popularity,
}

impl ServedState for View<'_> {
    fn dim(&self) -> usize {
        self.served.dim
    }

    fn items(&self) -> usize {
        self.catalog.len()
    }

    fn item_vector(&self, row: u32) -> Option<&[f32]> {
        let (r, d) = (row as usize, self.served.dim);
        self.served
            .has
            .get(r)
            .copied()
            .unwrap_or(false)
            .then(|| &self.served.items[r * d..(r + 1) * d])
    }

    fn popularity(&self, row: u32) -> f64 {
        self.popularity.score(row)
    }

    fn row(&self, item: &str) -> Option<u32> {
        self.catalog.get(item)
    }
}
