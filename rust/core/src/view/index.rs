//! The inverted label index of one collection (nodes or pods) of a view:
//! key → value → sorted item ids, and key → sorted ids of every item that
//! has the key (for `exists`, `!`, `>` and `<`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::inventory::{LabelSet, Member};

/// Sorted, distinct item ids.
pub type Postings = Vec<u32>;

#[derive(Debug, Default)]
pub struct KeyIndex {
    /// Items that have the key, whatever its value.
    pub all: Postings,
    pub values: HashMap<Box<str>, Postings>,
}

#[derive(Debug, Default)]
pub struct LabelIndex {
    keys: HashMap<Box<str>, KeyIndex>,
}

impl LabelIndex {
    /// The index of `members` (item `i` is `members[i]`; `None`: not served).
    pub fn build(members: &[Option<Member>]) -> Self {
        // Pair ids per distinct label set (pods of a ReplicaSet share one
        // set): each set's labels are hashed once, not once per item.
        let mut key_ids: HashMap<&str, u32> = HashMap::new();
        let mut keys: Vec<(&str, Postings)> = Vec::new();
        let mut pair_ids: HashMap<(u32, &str), u32> = HashMap::new();
        let mut pairs: Vec<(u32, &str, Postings)> = Vec::new();
        let mut by_set: HashMap<*const LabelSet, Vec<(u32, u32)>> = HashMap::new();
        for (i, m) in members.iter().enumerate() {
            let Some(m) = m else { continue };
            let ids = by_set.entry(Arc::as_ptr(&m.labels)).or_insert_with(|| {
                m.labels
                    .iter()
                    .map(|(k, v)| {
                        let kid = *key_ids.entry(k).or_insert_with(|| {
                            keys.push((k, Vec::new()));
                            (keys.len() - 1) as u32
                        });
                        let pid = *pair_ids.entry((kid, v)).or_insert_with(|| {
                            pairs.push((kid, v, Vec::new()));
                            (pairs.len() - 1) as u32
                        });
                        (kid, pid)
                    })
                    .collect()
            });
            // Items are visited in order, so every list comes out sorted.
            for &(kid, pid) in ids.iter() {
                keys[kid as usize].1.push(i as u32);
                pairs[pid as usize].2.push(i as u32);
            }
        }
        let mut index: Vec<KeyIndex> = keys
            .iter_mut()
            .map(|(_, all)| {
                all.shrink_to_fit();
                KeyIndex {
                    all: std::mem::take(all),
                    values: HashMap::new(),
                }
            })
            .collect();
        for (kid, v, mut ids) in pairs {
            ids.shrink_to_fit();
            index[kid as usize].values.insert(v.into(), ids);
        }
        LabelIndex {
            keys: keys
                .iter()
                .map(|(k, _)| Box::<str>::from(*k))
                .zip(index)
                .collect(),
        }
    }

    pub fn key(&self, key: &str) -> Option<&KeyIndex> {
        self.keys.get(key)
    }

    /// Heap bytes of the postings (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.keys
            .iter()
            .map(|(k, ki)| {
                k.len()
                    + ki.all.capacity() * 4
                    + ki.values
                        .iter()
                        .map(|(v, ids)| v.len() + ids.capacity() * 4 + 48)
                        .sum::<usize>()
                    + 64
            })
            .sum()
    }
}

/// The part of sorted `ids` within `lo..hi`.
pub fn restrict(ids: &[u32], lo: u32, hi: u32) -> &[u32] {
    let a = ids.partition_point(|&x| x < lo);
    let b = a + ids[a..].partition_point(|&x| x < hi);
    &ids[a..b]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{sorted_pairs, Inventory};

    #[test]
    fn postings_are_sorted_per_key_and_value() {
        let mut inv = Inventory::new();
        let sets = [
            vec![("app", "web"), ("tier", "front")],
            vec![("app", "db")],
            vec![],
            vec![("app", "web"), ("tier", "front")],
        ];
        let mut members = Vec::new();
        for (i, s) in sets.iter().enumerate() {
            let name = format!("p{i}");
            inv.set_pod("ns", &name, sorted_pairs(s.iter().copied()));
            members.push(inv.pod("ns", &name).cloned());
        }
        members.push(None);
        let idx = LabelIndex::build(&members);
        let app = idx.key("app").unwrap();
        assert_eq!(app.all, vec![0, 1, 3]);
        assert_eq!(app.values["web"], vec![0, 3]);
        assert_eq!(app.values["db"], vec![1]);
        assert_eq!(idx.key("tier").unwrap().all, vec![0, 3]);
        assert!(idx.key("missing").is_none());
        assert_eq!(restrict(&[1, 3, 5, 7], 2, 6), &[3, 5]);
        assert_eq!(restrict(&[1, 3, 5, 7], 8, 9), &[] as &[u32]);
        assert!(idx.heap_bytes() > 0);
    }
}
