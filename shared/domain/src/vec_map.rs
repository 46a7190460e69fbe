//! [`VecMap`]: an ordered map kept as one sorted `Vec` of pairs, for the small maps every
//! directory record carries (a person's profile attributes and IdP groups: a handful each);
//! [`VecSet`], the same for small sets (a Looker user's group ids).
//!
//! A `BTreeMap` allocates a whole node (room for 11 entries) for its first entry: about 1 KiB per
//! map for an [`Identity`](crate::identity::Identity)'s profile or groups, 2.2 KiB per person, 220
//! MiB for a directory of 100,000 people (bench/reconcile.md). Here a map of n entries holds n
//! slots. Same order (by key), same lookups (binary search), same serialized form (a JSON
//! object, keys in order; a duplicate key read keeps the last value, as a `BTreeMap` does). Inserts
//! and removals shift the slots after them: fine for maps of tens of entries, not for large ones.
//!
//! Not `litemap::LiteMap` (ICU4X), though it is the same idea and reconcile uses it for its
//! Looker users: its serde writes an empty map as `[]` where a `BTreeMap` (and the stored
//! directory) has `{}`, and reads a sequence of pairs as a map too; its `insert` grows by
//! doubling (4 slots for a person's 3 groups, where this holds 3); and it has no set (a
//! `LiteMap<T, ()>` is a JSON object, not the array a `BTreeSet` is). Checked against litemap
//! 0.8.3; `an_empty_map_and_set_write_what_a_btreemap_and_btreeset_write` pins the first.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// An ordered map as a sorted `Vec` of `(key, value)`, one key at most once.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VecMap<K, V> {
    entries: Vec<(K, V)>,
}

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap { entries: Vec::new() }
    }
}

impl<K: Ord, V> VecMap<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    fn find<Q>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.entries.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).ok().map(|i| &self.entries[i].1)
    }

    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).ok().map(|i| &mut self.entries[i].1)
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).is_ok()
    }

    /// Sets `key` to `value`; the value it replaced, if any.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                // Small maps grow one slot at a time (no spare room held per person); larger
                // ones double as a Vec does.
                if self.entries.len() == self.entries.capacity() && self.entries.len() < 16 {
                    self.entries.reserve_exact(1);
                }
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).ok().map(|i| self.entries.remove(i).1)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.entries.retain_mut(|(k, v)| keep(k, v));
    }
}

impl<K, V> VecMap<K, V> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> + ExactSizeIterator + Clone {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = (&K, &mut V)> + ExactSizeIterator {
        self.entries.iter_mut().map(|(k, v)| (&*k, v))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator + Clone {
        self.entries.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator + Clone {
        self.entries.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut V> + ExactSizeIterator {
        self.entries.iter_mut().map(|(_, v)| v)
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for VecMap<K, V> {
    /// As `BTreeMap` collects: sorted by key, a repeated key keeps its last value.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut entries: Vec<(K, V)> = iter.into_iter().collect();
        // Stable: equal keys stay in arrival order, so keeping the last of each run keeps the last
        // value given.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(K, V)> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => out.push((k, v)),
            }
        }
        out.shrink_to_fit();
        VecMap { entries: out }
    }
}

impl<K: Ord, V> Extend<(K, V)> for VecMap<K, V> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<K: Ord, V> From<BTreeMap<K, V>> for VecMap<K, V> {
    fn from(m: BTreeMap<K, V>) -> Self {
        // Already sorted and unique.
        VecMap {
            entries: m.into_iter().collect(),
        }
    }
}

impl<K, V> IntoIterator for VecMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::vec::IntoIter<(K, V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<'a, K, V> IntoIterator for &'a VecMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> (&'a K, &'a V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

impl<K: Ord + Borrow<Q>, V, Q: Ord + ?Sized> std::ops::Index<&Q> for VecMap<K, V> {
    type Output = V;
    /// The value of `key`; panics when there is none (as `BTreeMap` does).
    fn index(&self, key: &Q) -> &V {
        self.get(key).expect("no entry found for key")
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for VecMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Serialize, V: Serialize> Serialize for VecMap<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de, K: Ord + Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for VecMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Through a BTreeMap: exactly what the field read before (order, duplicate keys).
        BTreeMap::<K, V>::deserialize(d).map(VecMap::from)
    }
}

/// An ordered set as a sorted `Vec`, each value at most once: a [`VecMap`] without values.
/// Serialized as a sequence in order, as a `BTreeSet` is.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VecSet<T> {
    items: Vec<T>,
}

impl<T> Default for VecSet<T> {
    fn default() -> Self {
        VecSet { items: Vec::new() }
    }
}

impl<T: Ord> VecSet<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn contains<Q>(&self, value: &Q) -> bool
    where
        T: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.items.binary_search_by(|v| v.borrow().cmp(value)).is_ok()
    }

    /// Adds `value`; whether it was not there yet.
    pub fn insert(&mut self, value: T) -> bool {
        match self.items.binary_search(&value) {
            Ok(_) => false,
            Err(i) => {
                if self.items.len() == self.items.capacity() && self.items.len() < 16 {
                    self.items.reserve_exact(1);
                }
                self.items.insert(i, value);
                true
            }
        }
    }

    /// Removes `value`; whether it was there.
    pub fn remove<Q>(&mut self, value: &Q) -> bool
    where
        T: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        match self.items.binary_search_by(|v| v.borrow().cmp(value)) {
            Ok(i) => {
                self.items.remove(i);
                true
            }
            Err(_) => false,
        }
    }
}

impl<T> VecSet<T> {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Values in order.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.items.iter()
    }

    /// Values in order, as a slice (indexable: reconcile's planner refers to a member by its
    /// position).
    pub fn as_slice(&self) -> &[T] {
        &self.items
    }
}

impl<T: Ord> FromIterator<T> for VecSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut items: Vec<T> = iter.into_iter().collect();
        items.sort();
        items.dedup();
        items.shrink_to_fit();
        VecSet { items }
    }
}

impl<T: Ord> Extend<T> for VecSet<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        for v in iter {
            self.insert(v);
        }
    }
}

impl<T: Ord> From<BTreeSet<T>> for VecSet<T> {
    fn from(s: BTreeSet<T>) -> Self {
        VecSet {
            items: s.into_iter().collect(),
        }
    }
}

impl<T> IntoIterator for VecSet<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

impl<'a, T> IntoIterator for &'a VecSet<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

impl<T: fmt::Debug> fmt::Debug for VecSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl<T: Serialize> Serialize for VecSet<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de, T: Ord + Deserialize<'de>> Deserialize<'de> for VecSet<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Through a BTreeSet: exactly what the field read before (order, repeated values).
        BTreeSet::<T>::deserialize(d).map(VecSet::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_behaves_as_a_btreemap_of_the_same_inserts_and_removals() {
        let ops: Vec<(u8, bool)> = (0..200u32)
            .map(|i| (((i * 37 + 11) % 23) as u8, i % 5 != 0))
            .collect();
        let mut v: VecMap<String, u32> = VecMap::new();
        let mut b: BTreeMap<String, u32> = BTreeMap::new();
        for (i, (k, insert)) in ops.into_iter().enumerate() {
            let k = format!("k{k}");
            if insert {
                assert_eq!(v.insert(k.clone(), i as u32), b.insert(k, i as u32));
            } else {
                assert_eq!(v.remove(k.as_str()), b.remove(k.as_str()));
            }
            assert_eq!(v.iter().collect::<Vec<_>>(), b.iter().collect::<Vec<_>>());
            assert_eq!(v.len(), b.len());
        }
        for k in 0..25 {
            let k = format!("k{k}");
            assert_eq!(v.get(k.as_str()), b.get(k.as_str()));
            assert_eq!(v.contains_key(k.as_str()), b.contains_key(k.as_str()));
        }
    }

    #[test]
    fn it_reads_and_writes_the_json_of_a_btreemap() {
        let json = r#"{"b":2,"a":1,"c":3,"a":4}"#;
        let v: VecMap<String, u32> = serde_json::from_str(json).unwrap();
        let b: BTreeMap<String, u32> = serde_json::from_str(json).unwrap();
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        assert_eq!(serde_json::to_string(&v).unwrap(), r#"{"a":4,"b":2,"c":3}"#);
        let collected: VecMap<&str, u32> = [("b", 1), ("a", 2), ("b", 3)].into_iter().collect();
        assert_eq!(collected.iter().collect::<Vec<_>>(), [(&"a", &2), (&"b", &3)]);
    }

    #[test]
    fn the_set_behaves_as_a_btreeset_and_reads_and_writes_its_json() {
        let mut v: VecSet<String> = VecSet::new();
        let mut b: BTreeSet<String> = BTreeSet::new();
        for i in 0..100u32 {
            let k = format!("g{}", (i * 17 + 3) % 13);
            if i % 4 == 0 {
                assert_eq!(v.remove(k.as_str()), b.remove(k.as_str()));
            } else {
                assert_eq!(v.insert(k.clone()), b.insert(k));
            }
            assert_eq!(v.iter().collect::<Vec<_>>(), b.iter().collect::<Vec<_>>());
        }
        assert!(v.contains("g3") == b.contains("g3") && v.len() == b.len());
        let json = r#"["b","a","b"]"#;
        let v: VecSet<String> = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), r#"["a","b"]"#);
        assert_eq!(
            ["c", "a", "c"]
                .into_iter()
                .collect::<VecSet<_>>()
                .iter()
                .collect::<Vec<_>>(),
            [&"a", &"c"]
        );
    }

    #[test]
    fn an_empty_map_and_set_write_what_a_btreemap_and_btreeset_write() {
        let (v, b) = (VecMap::<String, u32>::new(), BTreeMap::<String, u32>::new());
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        assert_eq!(serde_json::to_string(&v).unwrap(), "{}");
        let (v, b) = (VecSet::<String>::new(), BTreeSet::<String>::new());
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        assert_eq!(serde_json::to_string(&v).unwrap(), "[]");
        // A map is an object: a sequence of pairs is refused, as by a BTreeMap.
        assert!(serde_json::from_str::<VecMap<String, u32>>(r#"[["a",1]]"#).is_err());
        assert!(serde_json::from_str::<BTreeMap<String, u32>>(r#"[["a",1]]"#).is_err());
    }

    #[test]
    fn a_small_map_holds_no_spare_slots() {
        let mut v: VecMap<u32, u32> = VecMap::new();
        for i in 0..3 {
            v.insert(i, i);
        }
        assert_eq!(v.entries.capacity(), 3);
    }
}
