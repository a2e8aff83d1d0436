//! The in-memory twin of the user-vector store (Redis in production): per generation, each
//! user's vector and a bounded list of recent items. The trainer writes it and serving
//! reads it through their own traits; the all-in-one mode hands one instance to both.

use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserRecord {
    pub vector: Option<Vec<f32>>,
    /// Newest first.
    pub recent: Recent,
}

/// A user's recent item ids, newest first, in one buffer: serving reads up to 500 of
/// them per request, and a `String` each was an allocation and a free each.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Recent {
    text: String,
    /// Where each id ends in `text`.
    ends: Vec<u32>,
}

impl Recent {
    /// Room for `items` ids of `bytes` bytes together.
    pub fn with_capacity(items: usize, bytes: usize) -> Self {
        Self {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(items),
        }
    }

    /// Appends `id` as the oldest so far.
    pub fn push(&mut self, id: &str) {
        self.text.push_str(id);
        self.ends
            .push(u32::try_from(self.text.len()).expect("recent ids under 4 GiB"));
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Keeps the newest `n`.
    pub fn truncate(&mut self, n: usize) {
        if n < self.ends.len() {
            self.text
                .truncate(n.checked_sub(1).map_or(0, |i| self.ends[i] as usize));
            self.ends.truncate(n);
        }
    }

    /// Newest first.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + Clone + '_ {
        (0..self.ends.len()).map(move |i| {
            let start = i.checked_sub(1).map_or(0, |j| self.ends[j] as usize);
            &self.text[start..self.ends[i] as usize]
        })
    }
}

impl<'a> FromIterator<&'a str> for Recent {
    fn from_iter<I: IntoIterator<Item = &'a str>>(ids: I) -> Self {
        let mut recent = Self::default();
        ids.into_iter().for_each(|id| recent.push(id));
        recent
    }
}

impl std::fmt::Debug for Recent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<S: AsRef<str>> PartialEq<[S]> for Recent {
    fn eq(&self, other: &[S]) -> bool {
        self.len() == other.len() && self.iter().zip(other).all(|(a, b)| a == b.as_ref())
    }
}

impl<S: AsRef<str>, const N: usize> PartialEq<[S; N]> for Recent {
    fn eq(&self, other: &[S; N]) -> bool {
        *self == other[..]
    }
}

impl<S: AsRef<str>> PartialEq<Vec<S>> for Recent {
    fn eq(&self, other: &Vec<S>) -> bool {
        *self == other[..]
    }
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
            .map(|l| l.iter().map(String::as_str).collect())
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
    fn recent_ids_share_one_buffer() {
        let mut r: Recent = ["i9", "", "é", "item-long-id-42"].into_iter().collect();
        assert_eq!(r.len(), 4);
        assert_eq!(r, ["i9", "", "é", "item-long-id-42"]);
        assert_eq!(format!("{r:?}"), r#"["i9", "", "é", "item-long-id-42"]"#);
        assert_ne!(r, ["i9", "", "é"]);
        r.truncate(9);
        assert_eq!(r.len(), 4);
        r.truncate(3);
        assert_eq!(r, ["i9", "", "é"]);
        r.push("x");
        assert_eq!(r, ["i9", "", "é", "x"]);
        r.truncate(0);
        assert!(r.is_empty() && r.iter().next().is_none());
        assert_eq!(r, Recent::default());
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
