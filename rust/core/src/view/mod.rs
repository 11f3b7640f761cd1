//! One served view of a snapshot: what the API selects from until the next
//! scrape cycle. Built once per cycle, off the request path, from the
//! snapshot plus the inventory as it is at that moment:
//!
//! - the inventory member (labels and liveness [`Token`]) of every snapshot
//!   node and pod the inventory knows; only those are served;
//! - an inverted label index per collection ([`index::LabelIndex`]);
//! - the namespace ranges of the pod columns (sorted by namespace, name) and
//!   a node → pods index for `spec.nodeName`.
//!
//! Labels are the inventory's as of the build: a label change shows from the
//! next view (at most one resolution late). Membership is not allowed to lag:
//! a member deleted from the inventory after the build stops being served at
//! once, because its token is dead; while nothing was deleted since the
//! build, selection skips those checks entirely.
//!
//! Selection ([`View::select`]) costs O(terms + matches): see `select.rs`.

pub mod index;
mod select;

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use crate::inventory::{Deletions, Inventory, LabelSet, Member, Shared};
use crate::snapshot::Snapshot;
use index::{LabelIndex, Postings};
pub use select::Query;

/// Which collection of a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Node,
    Pod,
}

/// A snapshot a view cannot be built from (a bug in whoever built it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewError(pub &'static str);

impl fmt::Display for ViewError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "inconsistent snapshot: {}", self.0)
    }
}

impl std::error::Error for ViewError {}

/// Nodes or pods: each item's inventory member and the label index.
#[derive(Debug)]
struct Collection {
    /// By item index; `None`: unknown to the inventory at build time.
    members: Box<[Option<Member>]>,
    index: LabelIndex,
}

impl Collection {
    fn new(members: Vec<Option<Member>>) -> Self {
        let members = members.into_boxed_slice();
        let index = LabelIndex::build(&members);
        Collection { members, index }
    }
}

#[derive(Debug)]
pub struct View {
    snap: Arc<Snapshot>,
    nodes: Collection,
    pods: Collection,
    /// (namespace, first pod) in name order; a namespace's pods run to the
    /// next entry's first pod (the last to the end).
    namespaces: Box<[(Arc<str>, u32)]>,
    pods_by_node: HashMap<Box<str>, Postings>,
    deletions: Deletions,
    /// `deletions.count()` before the members were resolved.
    deletions_at_build: u64,
}

/// Snapshot items looked up per hold of the inventory's read lock, so
/// discovery's writes (on the event loop) never wait long for a build.
const RESOLVE_BATCH: usize = 4096;

impl View {
    /// Build from `snap` and the shared inventory (read in short batches).
    pub fn build(snap: Arc<Snapshot>, inv: &Shared) -> Result<View, ViewError> {
        snap.validate().map_err(ViewError)?;
        let (deletions, at) = {
            let d = inv.read().deletions();
            let at = d.count();
            (d, at)
        };
        let nodes = resolve(snap.nodes.len(), |r, out| {
            let g = inv.read();
            resolve_nodes(&snap, &g, r, out)
        });
        let pods = resolve(snap.pods.len(), |r, out| {
            let g = inv.read();
            resolve_pods(&snap, &g, r, out)
        });
        Ok(Self::assemble(snap, nodes, pods, deletions, at))
    }

    /// Build from an inventory the caller already holds (tests, tools).
    pub fn from_inventory(snap: Arc<Snapshot>, inv: &Inventory) -> Result<View, ViewError> {
        snap.validate().map_err(ViewError)?;
        let deletions = inv.deletions();
        let at = deletions.count();
        let nodes = resolve(snap.nodes.len(), |r, out| resolve_nodes(&snap, inv, r, out));
        let pods = resolve(snap.pods.len(), |r, out| resolve_pods(&snap, inv, r, out));
        Ok(Self::assemble(snap, nodes, pods, deletions, at))
    }

    fn assemble(
        snap: Arc<Snapshot>,
        nodes: Vec<Option<Member>>,
        pods: Vec<Option<Member>>,
        deletions: Deletions,
        deletions_at_build: u64,
    ) -> View {
        let p = &snap.pods;
        let mut namespaces: Vec<(Arc<str>, u32)> = Vec::new();
        for (i, ns) in p.namespace.iter().enumerate() {
            // Names are interned by the store: equal names share a pointer.
            let same = namespaces
                .last()
                .is_some_and(|(last, _)| Arc::ptr_eq(last, ns) || last == ns);
            if !same {
                namespaces.push((ns.clone(), i as u32));
            }
        }
        // Pods of one node share the node's name allocation: group by pointer
        // (cheap), then key by name.
        let mut slot_of: HashMap<*const u8, usize> = HashMap::new();
        let mut slots: Vec<(&Arc<str>, Postings)> = Vec::new();
        for (i, node) in p.node.iter().enumerate() {
            if pods[i].is_none() {
                continue;
            }
            let slot = *slot_of.entry(Arc::as_ptr(node).cast()).or_insert_with(|| {
                slots.push((node, Vec::new()));
                slots.len() - 1
            });
            slots[slot].1.push(i as u32);
        }
        let mut pods_by_node: HashMap<Box<str>, Postings> = HashMap::new();
        let mut merged: Vec<Box<str>> = Vec::new();
        for (node, ids) in slots {
            match pods_by_node.entry(node.as_ref().into()) {
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(ids);
                }
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    // The same name in two allocations: never from the store, but
                    // exact anyway; sorted once below.
                    e.get_mut().extend(ids);
                    merged.push(node.as_ref().into());
                }
            }
        }
        merged.sort_unstable();
        merged.dedup();
        for name in merged {
            if let Some(ids) = pods_by_node.get_mut(&name) {
                ids.sort_unstable();
            }
        }
        for ids in pods_by_node.values_mut() {
            ids.shrink_to_fit();
        }
        View {
            nodes: Collection::new(nodes),
            pods: Collection::new(pods),
            namespaces: namespaces.into_boxed_slice(),
            pods_by_node,
            deletions,
            deletions_at_build,
            snap,
        }
    }

    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snap
    }

    pub fn len(&self, kind: Kind) -> usize {
        match kind {
            Kind::Node => self.snap.nodes.len(),
            Kind::Pod => self.snap.pods.len(),
        }
    }

    fn collection(&self, kind: Kind) -> &Collection {
        match kind {
            Kind::Node => &self.nodes,
            Kind::Pod => &self.pods,
        }
    }

    /// Whether members may have died since the build (then each is checked).
    fn check_liveness(&self) -> bool {
        self.deletions.count() != self.deletions_at_build
    }

    /// The member of item `i` if it is served: known at build time and not
    /// deleted since.
    pub fn served(&self, kind: Kind, i: usize) -> Option<&Member> {
        let m = self.collection(kind).members.get(i)?.as_ref()?;
        (!self.check_liveness() || m.token.is_alive()).then_some(m)
    }

    /// Labels of item `i` as captured at build time (empty when unknown).
    pub fn labels(&self, kind: Kind, i: usize) -> &LabelSet {
        static_empty(
            self.collection(kind)
                .members
                .get(i)
                .and_then(|m| m.as_ref()),
        )
    }

    /// The served node called `name`.
    pub fn node(&self, name: &str) -> Option<usize> {
        let i = self.snap.node_index(name)?;
        self.served(Kind::Node, i).map(|_| i)
    }

    /// The served pod `namespace/name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<usize> {
        let r = self.namespace_range(namespace)?;
        let names = &self.snap.pods.name[r.start as usize..r.end as usize];
        let k = names.binary_search_by(|n| n.as_ref().cmp(name)).ok()?;
        let i = r.start as usize + k;
        self.served(Kind::Pod, i).map(|_| i)
    }

    /// The pod items of `namespace`, if the snapshot has any.
    fn namespace_range(&self, namespace: &str) -> Option<Range<u32>> {
        let k = self
            .namespaces
            .binary_search_by(|(ns, _)| ns.as_ref().cmp(namespace))
            .ok()?;
        Some(self.namespace_span(k))
    }

    fn namespace_span(&self, k: usize) -> Range<u32> {
        let start = self.namespaces[k].1;
        let end = self
            .namespaces
            .get(k + 1)
            .map_or(self.snap.pods.len() as u32, |n| n.1);
        start..end
    }

    /// `timestamp_ms` of the given items (for the API's freshness metric).
    pub fn timestamps(&self, kind: Kind, ids: &[u32]) -> Vec<i64> {
        let col = match kind {
            Kind::Node => &self.snap.nodes.timestamp_ms,
            Kind::Pod => &self.snap.pods.timestamp_ms,
        };
        ids.iter()
            .filter_map(|&i| col.get(i as usize).copied())
            .collect()
    }

    /// Heap bytes of what the view adds to its snapshot (members and
    /// indexes; label sets are the inventory's and shared).
    pub fn heap_bytes(&self) -> usize {
        let member = std::mem::size_of::<Option<Member>>();
        (self.nodes.members.len() + self.pods.members.len()) * member
            + self.nodes.index.heap_bytes()
            + self.pods.index.heap_bytes()
            + self.namespaces.len() * 24
            + self
                .pods_by_node
                .iter()
                .map(|(k, v)| k.len() + v.capacity() * 4 + 48)
                .sum::<usize>()
    }
}

fn static_empty(m: Option<&Member>) -> &LabelSet {
    static EMPTY: std::sync::OnceLock<Arc<LabelSet>> = std::sync::OnceLock::new();
    match m {
        Some(m) => &m.labels,
        None => EMPTY.get_or_init(LabelSet::empty),
    }
}

/// Members of `len` items, resolved `RESOLVE_BATCH` at a time by `batch`.
fn resolve(
    len: usize,
    mut batch: impl FnMut(Range<usize>, &mut Vec<Option<Member>>),
) -> Vec<Option<Member>> {
    let mut out = Vec::with_capacity(len);
    let mut start = 0;
    while start < len {
        let end = (start + RESOLVE_BATCH).min(len);
        batch(start..end, &mut out);
        start = end;
    }
    out
}

fn resolve_nodes(snap: &Snapshot, inv: &Inventory, r: Range<usize>, out: &mut Vec<Option<Member>>) {
    out.extend(snap.nodes.name[r].iter().map(|n| inv.node(n).cloned()));
}

fn resolve_pods(snap: &Snapshot, inv: &Inventory, r: Range<usize>, out: &mut Vec<Option<Member>>) {
    let p = &snap.pods;
    // Pods are sorted by namespace: hash each namespace once per run.
    let mut current: Option<(&Arc<str>, Option<&crate::inventory::NamespacePods>)> = None;
    for i in r {
        let ns = &p.namespace[i];
        let map = match current {
            Some((c, map)) if Arc::ptr_eq(c, ns) => map,
            _ => {
                let map = inv.namespace(ns);
                current = Some((ns, map));
                map
            }
        };
        out.push(map.and_then(|m| m.get(p.name[i].as_ref())).cloned());
    }
}

#[cfg(test)]
mod tests;
