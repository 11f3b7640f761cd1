//! What discovery knows: the selected nodes and the Running pods, with their
//! labels. The API serves only objects present both here and in the store's
//! snapshot, and takes labels from here (the store never sees labels).
//!
//! Labels are pre-encoded (JSON and protobuf) when they are set, so encoding a
//! list splices them in instead of re-serialising 150,000 maps per request.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::wire::{json, proto};

/// One object's labels, sorted by key, plus their wire forms.
#[derive(Debug, PartialEq, Eq)]
pub struct LabelSet {
    pairs: Box<[(Box<str>, Box<str>)]>,
    /// `,"labels":{...}` (the text that follows `creationTimestamp` in
    /// ObjectMeta JSON), empty when there are no labels (upstream omits them).
    json: Box<[u8]>,
    /// ObjectMeta field 11 map entries, sorted by key like gogo-proto's marshaler.
    proto: Box<[u8]>,
}

impl LabelSet {
    pub fn new<K, V, I>(pairs: I) -> Self
    where
        K: Into<String>,
        V: Into<String>,
        I: IntoIterator<Item = (K, V)>,
    {
        // BTreeMap: sorted by key (byte order, as Go's sort.Strings), last duplicate wins.
        let sorted: BTreeMap<String, String> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let pairs: Box<[(Box<str>, Box<str>)]> = sorted
            .into_iter()
            .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
            .collect();
        let mut js = Vec::new();
        let mut pb = Vec::new();
        if !pairs.is_empty() {
            js.extend_from_slice(b",\"labels\":{");
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    js.push(b',');
                }
                json::write_str(&mut js, k);
                js.push(b':');
                json::write_str(&mut js, v);
            }
            js.push(b'}');
            for (k, v) in pairs.iter() {
                proto::write_string_map_entry(&mut pb, 11, k, v);
            }
        }
        LabelSet {
            pairs,
            json: js.into_boxed_slice(),
            proto: pb.into_boxed_slice(),
        }
    }

    /// The shared empty set (objects without labels, or unknown to discovery).
    pub fn empty() -> Arc<LabelSet> {
        Self::empty_arc().clone()
    }

    pub fn empty_ref() -> &'static LabelSet {
        Self::empty_arc()
    }

    fn empty_arc() -> &'static Arc<LabelSet> {
        static EMPTY: OnceLock<Arc<LabelSet>> = OnceLock::new();
        EMPTY.get_or_init(|| Arc::new(LabelSet::new(Vec::<(String, String)>::new())))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| self.pairs[i].1.as_ref())
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    pub fn json(&self) -> &[u8] {
        &self.json
    }

    pub fn proto(&self) -> &[u8] {
        &self.proto
    }
}

/// The pods of one namespace, by name.
pub type NamespacePods = HashMap<Box<str>, Arc<LabelSet>>;

/// Nodes by name; pods by namespace, then name.
#[derive(Debug)]
pub struct Inventory {
    nodes: HashMap<Box<str>, Arc<LabelSet>>,
    pods: HashMap<Box<str>, NamespacePods>,
    pod_count: usize,
    /// Unique per inventory, so caches can tell inventories apart.
    id: u64,
    /// Bumped on every change of membership or labels (not on no-op updates,
    /// which watches deliver constantly): what label caches are keyed to.
    generation: u64,
}

impl Default for Inventory {
    fn default() -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Inventory {
            nodes: HashMap::new(),
            pods: HashMap::new(),
            pod_count: 0,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            generation: 0,
        }
    }
}

impl Inventory {
    pub fn new() -> Self {
        Self::default()
    }

    /// (identity, generation): equal values mean nothing changed since.
    pub fn version(&self) -> (u64, u64) {
        (self.id, self.generation)
    }

    pub fn set_node(&mut self, name: &str, labels: LabelSet) {
        if self.nodes.get(name).is_some_and(|old| **old == labels) {
            return;
        }
        let labels = Self::share(labels);
        self.nodes.insert(name.into(), labels);
        self.generation += 1;
    }

    pub fn delete_node(&mut self, name: &str) -> bool {
        let removed = self.nodes.remove(name).is_some();
        self.generation += u64::from(removed);
        removed
    }

    pub fn set_pod(&mut self, namespace: &str, name: &str, labels: LabelSet) {
        let ns = match self.pods.get_mut(namespace) {
            Some(ns) => ns,
            None => self.pods.entry(namespace.into()).or_default(),
        };
        if ns.get(name).is_some_and(|old| **old == labels) {
            return;
        }
        let labels = Self::share(labels);
        if ns.insert(name.into(), labels).is_none() {
            self.pod_count += 1;
        }
        self.generation += 1;
    }

    pub fn delete_pod(&mut self, namespace: &str, name: &str) -> bool {
        let Some(ns) = self.pods.get_mut(namespace) else {
            return false;
        };
        let removed = ns.remove(name).is_some();
        if removed {
            self.pod_count -= 1;
            self.generation += 1;
            if ns.is_empty() {
                self.pods.remove(namespace);
            }
        }
        removed
    }

    pub fn has_node(&self, name: &str) -> bool {
        self.nodes.contains_key(name)
    }

    pub fn has_pod(&self, namespace: &str, name: &str) -> bool {
        self.pod_labels(namespace, name).is_some()
    }

    pub fn node_labels(&self, name: &str) -> Option<&Arc<LabelSet>> {
        self.nodes.get(name)
    }

    pub fn pod_labels(&self, namespace: &str, name: &str) -> Option<&Arc<LabelSet>> {
        self.pods.get(namespace).and_then(|ns| ns.get(name))
    }

    /// The pods of one namespace (lets a scan over a namespace's snapshot
    /// range hash the namespace once).
    pub fn namespace(&self, namespace: &str) -> Option<&NamespacePods> {
        self.pods.get(namespace)
    }

    pub fn clear(&mut self) {
        self.clear_nodes();
        self.clear_pods();
    }

    pub fn clear_nodes(&mut self) {
        self.nodes.clear();
        self.generation += 1;
    }

    pub fn clear_pods(&mut self) {
        self.pods.clear();
        self.pod_count = 0;
        self.generation += 1;
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn pod_count(&self) -> usize {
        self.pod_count
    }

    /// Objects without labels share one allocation.
    fn share(labels: LabelSet) -> Arc<LabelSet> {
        if labels.is_empty() {
            LabelSet::empty()
        } else {
            Arc::new(labels)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_sorted_and_preencoded() {
        let l = LabelSet::new([("b", "2"), ("a", "x\"y")]);
        assert_eq!(
            l.iter().collect::<Vec<_>>(),
            vec![("a", "x\"y"), ("b", "2")]
        );
        assert_eq!(l.get("a"), Some("x\"y"));
        assert_eq!(l.get("c"), None);
        assert_eq!(
            std::str::from_utf8(l.json()).unwrap(),
            r#","labels":{"a":"x\"y","b":"2"}"#
        );
        // field 11 (0x5a), entry {1: "a", 2: "x\"y"}, then {1: "b", 2: "2"}
        assert_eq!(
            l.proto(),
            b"\x5a\x08\x0a\x01a\x12\x03x\"y\x5a\x06\x0a\x01b\x12\x012"
        );
        let e = LabelSet::new(Vec::<(String, String)>::new());
        assert!(e.json().is_empty() && e.proto().is_empty() && e.is_empty());
    }

    #[test]
    fn inventory_tracks_nodes_and_pods() {
        let mut inv = Inventory::new();
        inv.set_node("n1", LabelSet::new([("role", "worker")]));
        inv.set_pod("ns", "p1", LabelSet::new([("app", "a")]));
        inv.set_pod("ns", "p2", LabelSet::new(Vec::<(String, String)>::new()));
        inv.set_pod("ns", "p2", LabelSet::new([("app", "b")]));
        assert_eq!((inv.node_count(), inv.pod_count()), (1, 2));
        assert!(inv.has_node("n1") && !inv.has_node("n2"));
        assert!(inv.has_pod("ns", "p2") && !inv.has_pod("other", "p2"));
        assert_eq!(inv.pod_labels("ns", "p2").unwrap().get("app"), Some("b"));
        assert!(inv.delete_pod("ns", "p1"));
        assert!(!inv.delete_pod("ns", "p1"));
        assert!(inv.delete_pod("ns", "p2"));
        assert_eq!(inv.pod_count(), 0);
        assert!(inv.namespace("ns").is_none());
        assert!(inv.delete_node("n1") && !inv.delete_node("n1"));
        inv.set_pod("a", "b", LabelSet::new([("k", "v")]));
        let v = inv.version();
        inv.set_pod("a", "b", LabelSet::new([("k", "v")]));
        assert_eq!(inv.version(), v, "a no-op update keeps the generation");
        inv.set_pod("a", "b", LabelSet::new([("k", "w")]));
        assert_ne!(inv.version(), v);
        assert_ne!(Inventory::new().version().0, v.0);
        inv.clear();
        assert_eq!((inv.node_count(), inv.pod_count()), (0, 0));
    }
}
