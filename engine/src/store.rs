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

/// Each item of `items` (oldest first) once, at its last occurrence, oldest first: the
/// order in which pushing them to the front of a history leaves the newest in front.
pub fn distinct_newest_last(items: &[String]) -> Vec<&str> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<&str> = items
        .iter()
        .rev()
        .filter(|i| seen.insert(i.as_str()))
        .map(String::as_str)
        .collect();
    out.reverse();
    out
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

    /// Moves `items` (oldest first in the slice) to the front of the user's history,
    /// which holds each item once, and keeps the newest `max_len` distinct items.
    pub fn push_history(&self, user_id: &str, items: &[String], max_len: usize) {
        let fresh = distinct_newest_last(items);
        let mut map = self.history.write().unwrap_or_else(|p| p.into_inner());
        let list = map.entry(user_id.to_owned()).or_default();
        list.retain(|i| !fresh.contains(&i.as_str()));
        for item in fresh {
            list.push_front(item.to_owned());
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

    #[test]
    fn history_holds_each_item_once_newest_first() {
        let s = MemoryUserStore::new();
        let items = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        s.push_history("u", &items(&["a", "b", "a", "c"]), 10);
        assert_eq!(s.get(1, "u").recent, items(&["c", "a", "b"]));
        s.push_history("u", &items(&["b", "d"]), 3);
        assert_eq!(s.get(1, "u").recent, items(&["d", "b", "c"]));
    }
}
