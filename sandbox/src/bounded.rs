//! A map that keeps at most `cap` entries, dropping the oldest inserted: the
//! sandbox keeps objects in memory, and a caller must not be able to grow it
//! without end.

use std::collections::{HashMap, VecDeque};

pub struct Bounded<V> {
    map: HashMap<String, V>,
    order: VecDeque<String>,
    cap: usize,
}

impl<V> Bounded<V> {
    pub fn new(cap: usize) -> Self {
        Bounded { map: HashMap::new(), order: VecDeque::new(), cap }
    }

    pub fn insert(&mut self, key: String, value: V) {
        if self.map.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
            while self.order.len() > self.cap {
                if let Some(oldest) = self.order.pop_front() {
                    self.map.remove(&oldest);
                }
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.map.get(key)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.map.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_entries_go_first_and_the_size_stays_capped() {
        let mut m = Bounded::new(3);
        for i in 0..10 {
            m.insert(format!("k{i}"), i);
        }
        assert_eq!(m.len(), 3);
        assert!(m.get("k6").is_none());
        assert_eq!(m.get("k9"), Some(&9));
        m.insert("k9".into(), 90); // an update is not a new entry
        assert_eq!((m.len(), m.get("k7")), (3, Some(&7)));
    }
}
