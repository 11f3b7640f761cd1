//! What discovery knows: the selected nodes and the Running pods, with their
//! labels. The API serves only objects present both here and in the store's
//! snapshot, and takes labels from here (the store never sees labels).
//!
//! - Labels are pre-encoded (JSON and protobuf) when first seen, so encoding a
//!   list splices them in instead of re-serialising 150,000 maps per request,
//!   and identical label sets (every pod of a ReplicaSet) share one
//!   allocation: the inventory interns them.
//! - Every member carries a [`Token`] that stays the same across label
//!   updates and is marked dead when the member is deleted. A served view
//!   keeps the tokens of what it serves, so a deletion takes effect in every
//!   view at once without the view consulting (or locking) the inventory.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::wire::{json, proto};

/// One label: (key, value).
pub type Pair = (Box<str>, Box<str>);

/// One object's labels, sorted by key, plus their wire forms.
#[derive(Debug)]
pub struct LabelSet {
    pairs: Box<[Pair]>,
    /// `,"labels":{...}` (the text that follows `creationTimestamp` in
    /// ObjectMeta JSON), empty when there are no labels (upstream omits them).
    json: Box<[u8]>,
    /// ObjectMeta field 11 map entries, sorted by key like gogo-proto's marshaler.
    proto: Box<[u8]>,
}

// Identity is the pairs: the wire forms follow from them.
impl PartialEq for LabelSet {
    fn eq(&self, other: &Self) -> bool {
        self.pairs == other.pairs
    }
}

impl Eq for LabelSet {}

impl Hash for LabelSet {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.pairs.hash(state);
    }
}

/// An interned set, looked up by its pairs before any wire form is built.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Interned(Arc<LabelSet>);

impl Borrow<[Pair]> for Interned {
    fn borrow(&self) -> &[Pair] {
        &self.0.pairs
    }
}

/// Sorted by key (byte order, as Go's sort.Strings), last duplicate wins.
pub fn sorted_pairs<K, V, I>(pairs: I) -> Box<[Pair]>
where
    K: Into<String>,
    V: Into<String>,
    I: IntoIterator<Item = (K, V)>,
{
    let mut v: Vec<Pair> = pairs
        .into_iter()
        .map(|(k, v)| (k.into().into_boxed_str(), v.into().into_boxed_str()))
        .collect();
    // Stable sort keeps input order among equal keys; keep the last of each.
    v.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<Pair> = Vec::with_capacity(v.len());
    for p in v {
        match out.last_mut() {
            Some(last) if last.0 == p.0 => *last = p,
            _ => out.push(p),
        }
    }
    out.into_boxed_slice()
}

impl LabelSet {
    pub fn new<K, V, I>(pairs: I) -> Self
    where
        K: Into<String>,
        V: Into<String>,
        I: IntoIterator<Item = (K, V)>,
    {
        Self::from_sorted(sorted_pairs(pairs))
    }

    /// From pairs already sorted by key without duplicates ([`sorted_pairs`]).
    pub fn from_sorted(pairs: Box<[Pair]>) -> Self {
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

    /// The shared empty set.
    pub fn empty() -> Arc<LabelSet> {
        static EMPTY: OnceLock<Arc<LabelSet>> = OnceLock::new();
        EMPTY
            .get_or_init(|| Arc::new(LabelSet::from_sorted(Box::new([]))))
            .clone()
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

    /// Heap bytes held by this set (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.pairs.len() * std::mem::size_of::<Pair>()
            + self
                .pairs
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
            + self.json.len()
            + self.proto.len()
    }
}

/// A member's life: the same token across label updates, dead once deleted.
#[derive(Debug)]
pub struct Token(AtomicBool);

impl Token {
    fn new() -> Arc<Token> {
        Arc::new(Token(AtomicBool::new(true)))
    }

    pub fn is_alive(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn kill(&self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A known node or pod: its labels and its life.
#[derive(Debug, Clone)]
pub struct Member {
    pub labels: Arc<LabelSet>,
    pub token: Arc<Token>,
}

/// How many deletions the inventory has seen, readable without its lock: a
/// view built when the count was `n` needs no liveness checks while it still is.
#[derive(Debug, Clone, Default)]
pub struct Deletions(Arc<AtomicU64>);

impl Deletions {
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// Sweep unused label sets no more often than this many distinct sets.
const MIN_PRUNE_AT: usize = 1024;

/// The pods of one namespace, by name.
pub type NamespacePods = HashMap<Box<str>, Member>;

/// Nodes by name; pods by namespace, then name.
#[derive(Debug)]
pub struct Inventory {
    nodes: HashMap<Box<str>, Member>,
    pods: HashMap<Box<str>, NamespacePods>,
    pod_count: usize,
    deletions: Deletions,
    label_sets: HashSet<Interned>,
    prune_at: usize,
}

impl Default for Inventory {
    fn default() -> Self {
        Inventory {
            nodes: HashMap::new(),
            pods: HashMap::new(),
            pod_count: 0,
            deletions: Deletions::default(),
            label_sets: HashSet::new(),
            prune_at: MIN_PRUNE_AT,
        }
    }
}

/// Insert or update `name` in `map`; true when it is new. A no-op update
/// (watches deliver them constantly) touches nothing.
fn upsert(map: &mut HashMap<Box<str>, Member>, name: &str, labels: Arc<LabelSet>) -> bool {
    match map.get_mut(name) {
        Some(m) => {
            if !Arc::ptr_eq(&m.labels, &labels) {
                m.labels = labels;
            }
            false
        }
        None => {
            map.insert(
                name.into(),
                Member {
                    labels,
                    token: Token::new(),
                },
            );
            true
        }
    }
}

impl Inventory {
    pub fn new() -> Self {
        Self::default()
    }

    /// The shared label set equal to `pairs` (sorted, see [`sorted_pairs`]),
    /// built and encoded only the first time it is seen.
    pub fn intern(&mut self, pairs: Box<[Pair]>) -> Arc<LabelSet> {
        if pairs.is_empty() {
            return LabelSet::empty();
        }
        if let Some(found) = self.label_sets.get(&*pairs) {
            return found.0.clone();
        }
        let set = Arc::new(LabelSet::from_sorted(pairs));
        self.label_sets.insert(Interned(set.clone()));
        if self.label_sets.len() >= self.prune_at {
            // Sets only the interner holds belong to nobody any more.
            self.label_sets.retain(|s| Arc::strong_count(&s.0) > 1);
            self.prune_at = (self.label_sets.len() * 2).max(MIN_PRUNE_AT);
        }
        set
    }

    /// Distinct label sets currently interned.
    pub fn label_set_count(&self) -> usize {
        self.label_sets.len()
    }

    pub fn deletions(&self) -> Deletions {
        self.deletions.clone()
    }

    pub fn set_node(&mut self, name: &str, labels: Box<[Pair]>) {
        let labels = self.intern(labels);
        upsert(&mut self.nodes, name, labels);
    }

    pub fn delete_node(&mut self, name: &str) -> bool {
        let Some(m) = self.nodes.remove(name) else {
            return false;
        };
        m.token.kill();
        self.deletions.bump();
        true
    }

    pub fn set_pod(&mut self, namespace: &str, name: &str, labels: Box<[Pair]>) {
        let labels = self.intern(labels);
        let ns = match self.pods.get_mut(namespace) {
            Some(ns) => ns,
            None => self.pods.entry(namespace.into()).or_default(),
        };
        if upsert(ns, name, labels) {
            self.pod_count += 1;
        }
    }

    pub fn delete_pod(&mut self, namespace: &str, name: &str) -> bool {
        let Some(ns) = self.pods.get_mut(namespace) else {
            return false;
        };
        let Some(m) = ns.remove(name) else {
            return false;
        };
        m.token.kill();
        self.pod_count -= 1;
        self.deletions.bump();
        if ns.is_empty() {
            self.pods.remove(namespace);
        }
        true
    }

    pub fn has_node(&self, name: &str) -> bool {
        self.nodes.contains_key(name)
    }

    pub fn has_pod(&self, namespace: &str, name: &str) -> bool {
        self.pod(namespace, name).is_some()
    }

    pub fn node(&self, name: &str) -> Option<&Member> {
        self.nodes.get(name)
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Member> {
        self.pods.get(namespace).and_then(|ns| ns.get(name))
    }

    pub fn node_labels(&self, name: &str) -> Option<&Arc<LabelSet>> {
        self.node(name).map(|m| &m.labels)
    }

    pub fn pod_labels(&self, namespace: &str, name: &str) -> Option<&Arc<LabelSet>> {
        self.pod(namespace, name).map(|m| &m.labels)
    }

    /// The pods of one namespace (lets a walk over a namespace's snapshot
    /// range hash the namespace once).
    pub fn namespace(&self, namespace: &str) -> Option<&NamespacePods> {
        self.pods.get(namespace)
    }

    pub fn clear(&mut self) {
        self.clear_nodes();
        self.clear_pods();
    }

    pub fn clear_nodes(&mut self) {
        for m in self.nodes.values() {
            m.token.kill();
        }
        self.nodes.clear();
        self.deletions.bump();
    }

    pub fn clear_pods(&mut self) {
        for m in self.pods.values().flat_map(|ns| ns.values()) {
            m.token.kill();
        }
        self.pods.clear();
        self.pod_count = 0;
        self.deletions.bump();
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn pod_count(&self) -> usize {
        self.pod_count
    }
}

/// The inventory shared by discovery (writes, from the event loop) and view
/// builders and request handlers (reads, from any thread).
#[derive(Debug)]
pub struct Shared {
    inner: RwLock<Inventory>,
    id: u64,
}

impl Default for Shared {
    fn default() -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Shared {
            inner: RwLock::new(Inventory::new()),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl Shared {
    pub fn new() -> Self {
        Self::default()
    }

    /// Unique per shared inventory: what a view remembers it was built from.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Each write is one insert or remove, so a panic while holding the lock
    /// cannot leave the maps half-updated: a poisoned lock is still usable.
    pub fn read(&self) -> RwLockReadGuard<'_, Inventory> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, Inventory> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Box<[Pair]> {
        sorted_pairs(p.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn labels_are_sorted_and_preencoded() {
        let l = LabelSet::new([("b", "2"), ("a", "x\"y"), ("b", "3")]);
        assert_eq!(
            l.iter().collect::<Vec<_>>(),
            vec![("a", "x\"y"), ("b", "3")],
            "sorted, the last duplicate wins"
        );
        assert_eq!(l.get("a"), Some("x\"y"));
        assert_eq!(l.get("c"), None);
        assert_eq!(
            std::str::from_utf8(l.json()).unwrap(),
            r#","labels":{"a":"x\"y","b":"3"}"#
        );
        // field 11 (0x5a), entry {1: "a", 2: "x\"y"}, then {1: "b", 2: "3"}
        assert_eq!(
            l.proto(),
            b"\x5a\x08\x0a\x01a\x12\x03x\"y\x5a\x06\x0a\x01b\x12\x013"
        );
        let e = LabelSet::new(Vec::<(String, String)>::new());
        assert!(e.json().is_empty() && e.proto().is_empty() && e.is_empty());
    }

    #[test]
    fn inventory_tracks_nodes_and_pods() {
        let mut inv = Inventory::new();
        inv.set_node("n1", pairs(&[("role", "worker")]));
        inv.set_pod("ns", "p1", pairs(&[("app", "a")]));
        inv.set_pod("ns", "p2", pairs(&[]));
        inv.set_pod("ns", "p2", pairs(&[("app", "b")]));
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
        inv.clear();
        assert_eq!((inv.node_count(), inv.pod_count()), (0, 0));
    }

    #[test]
    fn equal_label_sets_share_one_allocation() {
        let mut inv = Inventory::new();
        inv.set_pod("ns", "a", pairs(&[("app", "web"), ("hash", "1")]));
        inv.set_pod("ns", "b", pairs(&[("hash", "1"), ("app", "web")]));
        let a = inv.pod_labels("ns", "a").unwrap().clone();
        let b = inv.pod_labels("ns", "b").unwrap().clone();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(inv.label_set_count(), 1);
        // Unused sets are swept once the interner has doubled.
        for i in 0..MIN_PRUNE_AT * 2 {
            let name = format!("p{i}");
            inv.set_pod("tmp", &name, pairs(&[("i", &i.to_string())]));
            inv.delete_pod("tmp", &name);
        }
        assert!(
            inv.label_set_count() < MIN_PRUNE_AT,
            "{}",
            inv.label_set_count()
        );
        assert!(Arc::ptr_eq(
            &a,
            &inv.intern(pairs(&[("app", "web"), ("hash", "1")]))
        ));
    }

    #[test]
    fn tokens_survive_updates_and_die_with_the_member() {
        let mut inv = Inventory::new();
        let deletions = inv.deletions();
        inv.set_pod("ns", "p", pairs(&[("v", "1")]));
        let t = inv.pod("ns", "p").unwrap().token.clone();
        inv.set_pod("ns", "p", pairs(&[("v", "2")]));
        assert!(Arc::ptr_eq(&t, &inv.pod("ns", "p").unwrap().token));
        assert!(t.is_alive());
        assert_eq!(deletions.count(), 0);
        inv.delete_pod("ns", "p");
        assert!(!t.is_alive());
        assert_eq!(deletions.count(), 1);
        // Coming back is a new life.
        inv.set_pod("ns", "p", pairs(&[("v", "2")]));
        assert!(inv.pod("ns", "p").unwrap().token.is_alive());
        let n = {
            inv.set_node("n", pairs(&[]));
            inv.node("n").unwrap().token.clone()
        };
        let p = inv.pod("ns", "p").unwrap().token.clone();
        inv.clear();
        assert!(!n.is_alive() && !p.is_alive());
        assert!(deletions.count() >= 3);
    }
}
