//! String id → dense row maps. Rows are handed out in arrival order and never move, so a
//! row number is a stable key into the embedding tables and the FAISS index.

use std::collections::HashMap;

/// Bidirectional map between external string ids and dense `u32` rows.
#[derive(Debug, Default, Clone)]
pub struct IdMap {
    rows: HashMap<String, u32>,
    ids: Vec<String>,
}

impl IdMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// A map whose rows are the positions in `ids`; fails on a duplicate id.
    pub fn from_ids(ids: Vec<String>) -> Result<Self, String> {
        let mut rows = HashMap::with_capacity(ids.len());
        for (row, id) in ids.iter().enumerate() {
            let row = u32::try_from(row).map_err(|_| "more than u32::MAX ids".to_owned())?;
            if rows.insert(id.clone(), row).is_some() {
                return Err(format!("duplicate id {id:?}"));
            }
        }
        Ok(Self { rows, ids })
    }

    /// Row of `id`, assigning the next free row if it is new.
    pub fn get_or_insert(&mut self, id: &str) -> u32 {
        if let Some(&row) = self.rows.get(id) {
            return row;
        }
        let row = u32::try_from(self.ids.len()).expect("more than u32::MAX ids");
        self.rows.insert(id.to_owned(), row);
        self.ids.push(id.to_owned());
        row
    }

    pub fn get(&self, id: &str) -> Option<u32> {
        self.rows.get(id).copied()
    }

    pub fn id(&self, row: u32) -> Option<&str> {
        self.ids.get(row as usize).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Ids in row order.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_dense_stable_and_reversible() {
        let mut m = IdMap::new();
        assert_eq!(m.get_or_insert("b"), 0);
        assert_eq!(m.get_or_insert("a"), 1);
        assert_eq!(m.get_or_insert("b"), 0);
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("a"), Some(1));
        assert_eq!(m.get("zzz"), None);
        assert_eq!(m.id(1), Some("a"));
        assert_eq!(m.id(2), None);
    }
}
