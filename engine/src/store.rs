//! The in-memory twin of the user-vector store (Redis in production): per generation, each
//! user's vector and a bounded list of recent items. The trainer writes it and serving
//! reads it through their own traits; the all-in-one mode hands one instance to both.

use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserRecord {
    pub vector: Option<Vec<f32>>,
    /// Newest first.
    pub recent: Vec<String>,
}

#[derive(Debug, Default)]
pub struct MemoryUserStore {
    vectors: RwLock<HashMap<(u64, String), Vec<f32>>>,
    history: RwLock<HashMap<String, VecDeque<String>>>,
}

impl MemoryUserStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put_vector(&self, generation: u64, user_id: &str, vector: Vec<f32>) {
        let mut map = self.vectors.write().unwrap_or_else(|p| p.into_inner());
        map.insert((generation, user_id.to_owned()), vector);
    }

    /// Prepends `items` (oldest first in the slice) and keeps the newest `max_len`.
    pub fn push_history(&self, user_id: &str, items: &[String], max_len: usize) {
        let mut map = self.history.write().unwrap_or_else(|p| p.into_inner());
        let list = map.entry(user_id.to_owned()).or_default();
        for item in items {
            list.push_front(item.clone());
        }
        list.truncate(max_len);
    }

    pub fn get(&self, generation: u64, user_id: &str) -> UserRecord {
        let vector = self
            .vectors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(generation, user_id.to_owned()))
            .cloned();
        let recent = self
            .history
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(user_id)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default();
        UserRecord { vector, recent }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_are_separate_and_history_is_bounded() {
        let s = MemoryUserStore::new();
        s.put_vector(1, "u", vec![1.0]);
        s.push_history("u", &["a".into(), "b".into(), "c".into()], 2);
        let r = s.get(1, "u");
        assert_eq!(r.vector, Some(vec![1.0]));
        assert_eq!(r.recent, vec!["c".to_string(), "b".to_string()]);
        assert_eq!(s.get(2, "u").vector, None);
    }
}
