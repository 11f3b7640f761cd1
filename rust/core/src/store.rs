//! Last/prev storage and rates (SPEC §3).
//!
//! One [`NodeEntry`] per node holds the node's own `last`/`prev` points and a
//! columnar table of its containers, sorted by (namespace, pod, container).
//! Each scrape replaces a node's table wholesale (containers missing from the
//! new batch are gone), carrying `last`/`prev` over by a merge join against
//! the old table: both sides are sorted, so matching costs no hashing and the
//! old names (`Arc<str>`) are reused without touching the interner.
//!
//! [`Store::snapshot`] computes everything servable once, into the columnar
//! [`Snapshot`] the encoders read.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use crate::intern::Interner;

pub mod exchange;
use crate::parse::{Batch, ContainerColumns, NodeSample};
use crate::snapshot::{ContainerMetrics, NodeMetrics, PodMetrics, Snapshot};

/// A container younger than this has no usable synthetic `prev` (upstream's
/// `freshContainerMinMetricsResolution`): its rate would be too noisy.
pub const FRESH_CONTAINER_MIN_MS: i64 = 10_000;

/// Start time absent. Being smaller than any real instant, it reads as "long
/// ago": never fresh, never a restart — what upstream's zero time does.
const NO_START: i64 = i64::MIN;

/// One node-level point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NodePoint {
    ts_ms: i64,
    cpu_ns: u64,
    memory_bytes: u64,
}

/// A node's containers as columns, sorted by (namespace, pod, name), one row
/// per container. `prev_*` are meaningful only where `has_prev`.
#[derive(Debug, Default)]
struct Containers {
    namespace: Vec<Arc<str>>,
    pod: Vec<Arc<str>>,
    name: Vec<Arc<str>>,
    start_ms: Vec<i64>,
    last_ts: Vec<i64>,
    last_cpu: Vec<u64>,
    last_mem: Vec<u64>,
    has_prev: Vec<bool>,
    prev_ts: Vec<i64>,
    prev_cpu: Vec<u64>,
}

/// A container's new sample, validated and converted.
#[derive(Debug, Clone, Copy)]
struct Sample {
    ts_ms: i64,
    start_ms: i64,
    cpu_ns: u64,
    memory_bytes: u64,
}

/// The stored state of one container before this scrape.
#[derive(Debug, Clone, Copy)]
struct Old {
    last_ts: i64,
    last_cpu: u64,
    prev: Option<(i64, u64)>,
}

#[derive(Debug)]
struct NodeEntry {
    name: Arc<str>,
    /// `request_time_ms` of the last successful ingest: the grace clock.
    scraped_ms: i64,
    /// Scraped here (true) or imported from a peer (`exchange`): only a replica's own
    /// points are exported to its peers.
    local: bool,
    last: Option<NodePoint>,
    prev: Option<NodePoint>,
    containers: Containers,
}

/// The store: every node's last/prev points, names interned.
#[derive(Debug)]
pub struct Store {
    resolution_ms: i64,
    nodes: BTreeMap<Arc<str>, NodeEntry>,
    interner: Interner,
}

/// CPU core-seconds → integer nanoseconds, truncated; `None` when missing
/// (NaN, ±Inf, negative) or zero — SPEC §1 treats zero as missing too.
fn cpu_ns(seconds: f64) -> Option<u64> {
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    // `as` saturates: absurdly large counters clamp instead of wrapping.
    let ns = (seconds * 1e9) as u64;
    (ns != 0).then_some(ns)
}

/// Memory bytes, truncated; `None` when missing or zero.
fn memory_bytes(bytes: f64) -> Option<u64> {
    if !bytes.is_finite() || bytes < 0.0 {
        return None;
    }
    let b = bytes as u64;
    (b != 0).then_some(b)
}

/// Start time seconds → milliseconds, rounded: the float seconds carry
/// sub-microsecond noise (`1735032785.001` is `…785.00099999`), and
/// truncating it would shift a synthetic `prev` by a whole millisecond.
/// [`NO_START`] when missing.
fn start_ms(seconds: f64) -> i64 {
    if !seconds.is_finite() || seconds < 0.0 {
        return NO_START;
    }
    (seconds * 1e3).round() as i64
}

/// Parser timestamps are 0 where the line had none.
fn stamp(ts_ms: i64, request_time_ms: i64) -> i64 {
    if ts_ms == 0 {
        request_time_ms
    } else {
        ts_ms
    }
}

/// `(nanocores, window_ms)` between two points, or `None` when the counter
/// went backwards (skipped for this read: no negative rates) or the window
/// is not positive.
fn rate(last_ts: i64, last_cpu: u64, prev_ts: i64, prev_cpu: u64) -> Option<(u64, i64)> {
    let delta_ns = last_cpu.checked_sub(prev_cpu)?;
    let window = last_ts.checked_sub(prev_ts).filter(|w| *w > 0)?;
    // ns per ms × 1000 = ns per s = nanocores; u128 so the product never
    // overflows, then clamp (a rate beyond u64 is nonsense, not a crash).
    let nanocores = u128::from(delta_ns) * 1000 / window as u128;
    Some((u64::try_from(nanocores).unwrap_or(u64::MAX), window))
}

/// Upstream's `prev` rule for a point stored at `new_ts` over `last`/`prev`.
fn carried_prev<P: Copy>(
    last: Option<(i64, P)>,
    prev: Option<(i64, P)>,
    new_ts: i64,
) -> Option<(i64, P)> {
    match last {
        Some((last_ts, _)) if new_ts > last_ts => last,
        Some(_) => prev.filter(|(prev_ts, _)| *prev_ts < new_ts),
        None => None,
    }
}

/// Names compare by pointer first: interned names are equal iff the same
/// allocation, so only different names pay for a byte comparison.
fn cmp_name(a: &Arc<str>, b: &Arc<str>) -> Ordering {
    if Arc::ptr_eq(a, b) {
        Ordering::Equal
    } else {
        a.as_ref().cmp(b.as_ref())
    }
}

impl Containers {
    fn with_capacity(n: usize) -> Self {
        Containers {
            namespace: Vec::with_capacity(n),
            pod: Vec::with_capacity(n),
            name: Vec::with_capacity(n),
            start_ms: Vec::with_capacity(n),
            last_ts: Vec::with_capacity(n),
            last_cpu: Vec::with_capacity(n),
            last_mem: Vec::with_capacity(n),
            has_prev: Vec::with_capacity(n),
            prev_ts: Vec::with_capacity(n),
            prev_cpu: Vec::with_capacity(n),
        }
    }

    fn len(&self) -> usize {
        self.name.len()
    }

    fn old(&self, i: usize) -> Old {
        Old {
            last_ts: self.last_ts[i],
            last_cpu: self.last_cpu[i],
            prev: self.has_prev[i].then(|| (self.prev_ts[i], self.prev_cpu[i])),
        }
    }

    fn push(&mut self, names: (Arc<str>, Arc<str>, Arc<str>), s: Sample, prev: Option<(i64, u64)>) {
        self.namespace.push(names.0);
        self.pod.push(names.1);
        self.name.push(names.2);
        self.start_ms.push(s.start_ms);
        self.last_ts.push(s.ts_ms);
        self.last_cpu.push(s.cpu_ns);
        self.last_mem.push(s.memory_bytes);
        self.has_prev.push(prev.is_some());
        let (prev_ts, prev_cpu) = prev.unwrap_or((0, 0));
        self.prev_ts.push(prev_ts);
        self.prev_cpu.push(prev_cpu);
    }

    /// Rows of pod (namespace, pod); empty if absent. Binary search: the
    /// table is sorted by (namespace, pod, name).
    fn pod_rows(&self, namespace: &str, pod: &str) -> Range<usize> {
        let target = (namespace, pod);
        let at = |i: usize| (&*self.namespace[i], &*self.pod[i]);
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if at(mid) < target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let end = lo + (lo..self.len()).take_while(|&i| at(i) == target).count();
        lo..end
    }

    fn remove_rows(&mut self, rows: Range<usize>) {
        self.namespace.drain(rows.clone());
        self.pod.drain(rows.clone());
        self.name.drain(rows.clone());
        self.start_ms.drain(rows.clone());
        self.last_ts.drain(rows.clone());
        self.last_cpu.drain(rows.clone());
        self.last_mem.drain(rows.clone());
        self.has_prev.drain(rows.clone());
        self.prev_ts.drain(rows.clone());
        self.prev_cpu.drain(rows);
    }

    /// Row ranges of each pod, in table order.
    fn pods(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        let mut start = 0;
        std::iter::from_fn(move || {
            if start >= self.len() {
                return None;
            }
            let (ns, pod) = (&self.namespace[start], &self.pod[start]);
            let mut end = start + 1;
            while end < self.len()
                && Arc::ptr_eq(&self.namespace[end], ns)
                && Arc::ptr_eq(&self.pod[end], pod)
            {
                end += 1;
            }
            let rows = start..end;
            start = end;
            Some(rows)
        })
    }
}

/// Validated sample of batch row `i`, or `None` if the container lacks CPU
/// or memory (or reports 0): that makes its whole pod unusable this cycle.
fn sample(cols: &ContainerColumns, i: usize, request_time_ms: i64) -> Option<Sample> {
    Some(Sample {
        cpu_ns: cpu_ns(cols.cpu_seconds[i])?,
        memory_bytes: memory_bytes(cols.memory_bytes[i])?,
        ts_ms: stamp(cols.timestamp_ms[i], request_time_ms),
        start_ms: start_ms(cols.start_time_seconds[i]),
    })
}

fn node_point(node: &NodeSample, request_time_ms: i64) -> Option<NodePoint> {
    Some(NodePoint {
        cpu_ns: cpu_ns(node.cpu_seconds)?,
        memory_bytes: memory_bytes(node.memory_bytes)?,
        ts_ms: stamp(node.timestamp_ms, request_time_ms),
    })
}

/// A node's points are dropped at its next successful scrape once the gap
/// since the previous one exceeds this (2.5 × resolution).
fn stale_after_ms(resolution_ms: i64) -> i64 {
    2 * resolution_ms + resolution_ms / 2
}

impl Store {
    /// `resolution_ms` is `--metric-resolution`: it bounds the fresh-container
    /// shortcut and sets the grace period (2 × resolution).
    pub fn new(resolution_ms: i64) -> Self {
        Store {
            resolution_ms,
            nodes: BTreeMap::new(),
            interner: Interner::new(),
        }
    }

    pub fn resolution_ms(&self) -> i64 {
        self.resolution_ms
    }

    /// Store one successful scrape of `node`. `request_time_ms` is the time
    /// just before the request was sent: it stamps samples without a
    /// timestamp and restarts the node's grace clock.
    pub fn ingest(&mut self, node: &str, batch: &Batch, request_time_ms: i64) {
        let Store {
            resolution_ms,
            nodes,
            interner,
        } = self;
        let entry = match nodes.get_mut(node) {
            Some(entry) => {
                // Points that outlived the grace period are history, not a
                // baseline: pairing them with this scrape would serve one rate
                // averaged over the whole outage as if it were current (the HPA
                // would act on it). The half resolution of slack keeps one
                // failed scrape plus the random stagger inside the limit.
                if request_time_ms - entry.scraped_ms > stale_after_ms(*resolution_ms) {
                    entry.last = None;
                    entry.prev = None;
                    entry.containers = Containers::default();
                }
                entry
            }
            None => {
                let name = interner.intern(node);
                nodes.entry(Arc::clone(&name)).or_insert(NodeEntry {
                    name,
                    scraped_ms: request_time_ms,
                    local: true,
                    last: None,
                    prev: None,
                    containers: Containers::default(),
                })
            }
        };
        entry.scraped_ms = request_time_ms;
        entry.local = true;

        match node_point(&batch.node, request_time_ms) {
            Some(new) => {
                let pair = |p: Option<NodePoint>| p.map(|p| (p.ts_ms, p));
                entry.prev =
                    carried_prev(pair(entry.last), pair(entry.prev), new.ts_ms).map(|(_, p)| p);
                entry.last = Some(new);
            }
            // Upstream rebuilds storage per scrape: an unusable node point
            // drops the node's history.
            None => {
                entry.last = None;
                entry.prev = None;
            }
        }

        let old = std::mem::take(&mut entry.containers);
        // `old` is consumed (its departed names dropped) before the prune.
        entry.containers = store_containers(
            &batch.containers,
            old,
            request_time_ms,
            *resolution_ms,
            interner,
        );
        interner.maybe_prune();
    }

    /// Drop everything known about `node`. Returns whether it was known.
    pub fn forget_node(&mut self, node: &str) -> bool {
        self.nodes.remove(node).is_some()
    }

    /// Drop pod `namespace/pod` from every node. Returns the number of
    /// container rows removed.
    pub fn forget_pod(&mut self, namespace: &str, pod: &str) -> usize {
        let mut removed = 0;
        for entry in self.nodes.values_mut() {
            let rows = entry.containers.pod_rows(namespace, pod);
            removed += rows.len();
            if !rows.is_empty() {
                entry.containers.remove_rows(rows);
            }
        }
        removed
    }

    /// `(node points, container points)`: nodes with a stored `last` point,
    /// and containers with a stored pair (those a rate can come from).
    pub fn points(&self) -> (usize, usize) {
        let nodes = self.nodes.values().filter(|e| e.last.is_some()).count();
        let containers = self
            .nodes
            .values()
            .map(|e| e.containers.has_prev.iter().filter(|p| **p).count())
            .sum();
        (nodes, containers)
    }

    /// Number of nodes with any stored state.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Number of distinct names held by the interner (for tests/metrics).
    pub fn interned_names(&self) -> usize {
        self.interner.len()
    }

    /// Everything servable at `now_ms`: nodes and pods whose last good scrape
    /// is at most 2 × resolution old, with a valid pair of points.
    pub fn snapshot(&self, now_ms: i64) -> Snapshot {
        let horizon = i128::from(now_ms) - 2 * i128::from(self.resolution_ms);
        let mut nodes = NodeMetrics::default();
        let rows: usize = self.nodes.values().map(|e| e.containers.len()).sum();
        let mut refs: Vec<PodRef<'_>> = Vec::with_capacity(rows);
        let mut names: Vec<&Arc<str>> = Vec::with_capacity(rows);
        let mut cpu: Vec<u64> = Vec::with_capacity(rows);
        let mut mem: Vec<u64> = Vec::with_capacity(rows);

        // Sorting 30k pods by strings is the costliest step; most comparisons
        // are settled by an inline key instead: namespace rank, then the
        // first bytes of the pod name (see `prefix_key`).
        let mut namespace_ids: HashMap<usize, u32> = HashMap::new();
        let mut namespaces: Vec<&Arc<str>> = Vec::new();
        let mut last_ns: Option<&Arc<str>> = None;
        let mut ns_id = 0u32;

        for entry in self.nodes.values() {
            if i128::from(entry.scraped_ms) < horizon {
                continue;
            }
            if let (Some(last), Some(prev)) = (entry.last, entry.prev) {
                if let Some((nanocores, window)) =
                    rate(last.ts_ms, last.cpu_ns, prev.ts_ms, prev.cpu_ns)
                {
                    nodes.name.push(Arc::clone(&entry.name));
                    nodes.cpu_nanocores.push(nanocores);
                    nodes.memory_bytes.push(last.memory_bytes);
                    nodes.timestamp_ms.push(last.ts_ms);
                    nodes.window_ms.push(window);
                }
            }
            let c = &entry.containers;
            'pods: for rows in c.pods() {
                let begin = cpu.len();
                // (timestamp, window) of the container with the earliest last.
                let mut earliest: Option<(i64, i64)> = None;
                for i in rows.clone() {
                    let usage = c.has_prev[i]
                        .then(|| rate(c.last_ts[i], c.last_cpu[i], c.prev_ts[i], c.prev_cpu[i]))
                        .flatten();
                    let Some((nanocores, window)) = usage else {
                        // All or nothing: one container without a rate
                        // (no pair yet, or a counter decrease) hides the pod.
                        names.truncate(begin);
                        cpu.truncate(begin);
                        mem.truncate(begin);
                        continue 'pods;
                    };
                    names.push(&c.name[i]);
                    cpu.push(nanocores);
                    mem.push(c.last_mem[i]);
                    if earliest.is_none_or(|(ts, _)| c.last_ts[i] < ts) {
                        earliest = Some((c.last_ts[i], window));
                    }
                }
                if let Some((ts_ms, window_ms)) = earliest {
                    let ns = &c.namespace[rows.start];
                    // Namespaces are few and each table is sorted by them,
                    // so this lookup runs once per (node, namespace).
                    if !last_ns.is_some_and(|last| Arc::ptr_eq(last, ns)) {
                        let next = namespaces.len() as u32;
                        ns_id = *namespace_ids
                            .entry(Arc::as_ptr(ns) as *const u8 as usize)
                            .or_insert_with(|| {
                                namespaces.push(ns);
                                next
                            });
                        last_ns = Some(ns);
                    }
                    refs.push(PodRef {
                        key: prefix_key(ns_id, &c.pod[rows.start]),
                        namespace: ns,
                        name: &c.pod[rows.start],
                        node: &entry.name,
                        ts_ms,
                        window_ms,
                        containers: begin..cpu.len(),
                    });
                }
            }
        }

        // Replace first-seen namespace ids by their rank in name order.
        let mut by_name: Vec<u32> = (0..namespaces.len() as u32).collect();
        by_name.sort_unstable_by(|&a, &b| namespaces[a as usize].cmp(namespaces[b as usize]));
        let mut rank = vec![0u32; namespaces.len()];
        for (r, &id) in by_name.iter().enumerate() {
            rank[id as usize] = r as u32;
        }
        for r in &mut refs {
            let id = (r.key >> 96) as usize;
            r.key = (r.key & PREFIX_MASK) | (u128::from(rank[id]) << 96);
        }
        // Node name breaks ties so duplicates come out in a fixed order.
        refs.sort_unstable_by(|a, b| {
            a.key
                .cmp(&b.key)
                .then_with(|| cmp_name(a.name, b.name))
                .then_with(|| cmp_name(a.node, b.node))
        });

        let mut pods = PodMetrics {
            namespace: Vec::with_capacity(refs.len()),
            name: Vec::with_capacity(refs.len()),
            node: Vec::with_capacity(refs.len()),
            timestamp_ms: Vec::with_capacity(refs.len()),
            window_ms: Vec::with_capacity(refs.len()),
            container_start: Vec::with_capacity(refs.len() + 1),
        };
        let mut containers = ContainerMetrics {
            name: Vec::with_capacity(cpu.len()),
            cpu_nanocores: Vec::with_capacity(cpu.len()),
            memory_bytes: Vec::with_capacity(cpu.len()),
        };
        pods.container_start.push(0);
        let mut i = 0;
        while i < refs.len() {
            // A pod reported by two nodes (it moved, and the old node has not
            // been rescraped yet): serve the most recent report.
            let mut best = i;
            let mut j = i + 1;
            while j < refs.len()
                && Arc::ptr_eq(refs[j].namespace, refs[i].namespace)
                && Arc::ptr_eq(refs[j].name, refs[i].name)
            {
                if refs[j].ts_ms > refs[best].ts_ms {
                    best = j;
                }
                j += 1;
            }
            let r = &refs[best];
            pods.namespace.push(Arc::clone(r.namespace));
            pods.name.push(Arc::clone(r.name));
            pods.node.push(Arc::clone(r.node));
            pods.timestamp_ms.push(r.ts_ms);
            pods.window_ms.push(r.window_ms);
            let k = r.containers.clone();
            containers
                .name
                .extend(names[k.clone()].iter().map(|n| Arc::clone(n)));
            containers.cpu_nanocores.extend_from_slice(&cpu[k.clone()]);
            containers.memory_bytes.extend_from_slice(&mem[k]);
            // Container counts fit u32 by a wide margin (a cluster has < 1M).
            let end = u32::try_from(containers.name.len()).unwrap_or(u32::MAX);
            pods.container_start.push(end);
            i = j;
        }

        Snapshot {
            nodes,
            pods,
            containers,
        }
    }
}

const PREFIX_MASK: u128 = (1 << 96) - 1;

/// Sort key: namespace id in the top 32 bits, then the first 12 bytes of the
/// pod name, big-endian and zero-padded. Padding with the smallest byte keeps
/// the map monotone, so keys order like (namespace, name) and only equal keys
/// need the full name comparison.
fn prefix_key(namespace_id: u32, name: &str) -> u128 {
    let mut buf = [0u8; 12];
    let n = name.len().min(12);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    let mut key = u128::from(namespace_id) << 96;
    for (i, b) in buf.iter().enumerate() {
        key |= u128::from(*b) << (88 - 8 * i);
    }
    key
}

/// One servable pod found while walking the nodes, before global sorting.
struct PodRef<'a> {
    key: u128,
    namespace: &'a Arc<str>,
    name: &'a Arc<str>,
    node: &'a Arc<str>,
    ts_ms: i64,
    window_ms: i64,
    /// Rows in the snapshot's scratch container columns.
    containers: Range<usize>,
}

/// (namespace, pod, container) names of one row.
type Names = (Arc<str>, Arc<str>, Arc<str>);

fn head_key(h: &Names) -> (&str, &str, &str) {
    (&h.0, &h.1, &h.2)
}

/// Build a node's new container table from its batch and its old table.
fn store_containers(
    cols: &ContainerColumns,
    mut old: Containers,
    request_time_ms: i64,
    resolution_ms: i64,
    interner: &mut Interner,
) -> Containers {
    // The parser guarantees equal lengths; a shorter column must still not
    // index out of bounds.
    let n = [
        cols.namespace.len(),
        cols.pod.len(),
        cols.container.len(),
        cols.cpu_seconds.len(),
        cols.memory_bytes.len(),
        cols.start_time_seconds.len(),
        cols.timestamp_ms.len(),
    ]
    .into_iter()
    .min()
    .unwrap_or(0);
    let key = |i: usize| {
        (
            cols.namespace[i].as_str(),
            cols.pod[i].as_str(),
            cols.container[i].as_str(),
        )
    };
    // Stable: of duplicate rows the first seen wins.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| key(a).cmp(&key(b)));
    order.dedup_by(|b, a| key(*a) == key(*b));

    let mut new = Containers::with_capacity(order.len());
    // Merge join: `head` holds the names of old row `cursor`. Names of
    // matched rows move into the new table instead of being cloned, so
    // containers that stay cost no reference-count traffic.
    let mut old_ns = std::mem::take(&mut old.namespace).into_iter();
    let mut old_pod = std::mem::take(&mut old.pod).into_iter();
    let mut old_name = std::mem::take(&mut old.name).into_iter();
    let mut next_old = || Some((old_ns.next()?, old_pod.next()?, old_name.next()?));
    let mut head = next_old();
    let mut cursor = 0;
    let mut samples: Vec<Sample> = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let (ns, pod, _) = key(order[start]);
        let mut end = start + 1;
        while end < order.len() && {
            let (ns2, pod2, _) = key(order[end]);
            (ns2, pod2) == (ns, pod)
        } {
            end += 1;
        }
        let group = &order[start..end];
        start = end;

        // A pod is all-or-nothing: one unusable container drops the pod
        // (and, as upstream rebuilds from each batch, its history).
        samples.clear();
        let all = group.iter().try_for_each(|&i| {
            samples.push(sample(cols, i, request_time_ms)?);
            Some(())
        });
        if all.is_none() {
            continue;
        }

        for (&i, &s) in group.iter().zip(&samples) {
            let k = key(i);
            while head.as_ref().is_some_and(|h| head_key(h) < k) {
                head = next_old();
                cursor += 1;
            }
            let matched = head.take_if(|h| head_key(h) == k);
            let prev = container_prev(
                &s,
                matched.is_some().then(|| old.old(cursor)),
                resolution_ms,
            );
            let names = match matched {
                Some(names) => {
                    head = next_old();
                    cursor += 1;
                    names
                }
                None => {
                    let last = new.len().checked_sub(1);
                    // Siblings in the same pod share namespace and pod names.
                    match last.filter(|&l| (&*new.namespace[l], &*new.pod[l]) == (k.0, k.1)) {
                        Some(l) => (
                            Arc::clone(&new.namespace[l]),
                            Arc::clone(&new.pod[l]),
                            interner.intern(k.2),
                        ),
                        None => (
                            interner.intern(k.0),
                            interner.intern(k.1),
                            interner.intern(k.2),
                        ),
                    }
                }
            };
            new.push(names, s, prev);
        }
    }
    new
}

/// SPEC §3 `prev` for a container's new sample `s` given its old state.
fn container_prev(s: &Sample, old: Option<Old>, resolution_ms: i64) -> Option<(i64, u64)> {
    // Saturating: a missing start (NO_START) gives a huge age — not fresh.
    let age = s.ts_ms.saturating_sub(s.start_ms);
    // Fresh container: a synthetic prev at its start with CPU 0 gives it a
    // value after one scrape.
    if (FRESH_CONTAINER_MIN_MS..resolution_ms).contains(&age) {
        return Some((s.start_ms, 0));
    }
    let old = old?;
    // Restarted (started at or after the old last sample): old points
    // belong to the previous incarnation.
    if s.start_ms >= old.last_ts {
        return None;
    }
    carried_prev(Some((old.last_ts, old.last_cpu)), old.prev, s.ts_ms)
}

impl Snapshot {
    /// Readiness: at least one node and one pod servable.
    pub fn is_ready(&self) -> bool {
        !self.nodes.is_empty() && !self.pods.is_empty()
    }

    /// Index of node `name` (nodes are sorted by name).
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes
            .name
            .binary_search_by(|n| n.as_ref().cmp(name))
            .ok()
    }

    /// Index of pod `namespace/name` (pods are sorted by namespace, name).
    pub fn pod_index(&self, namespace: &str, name: &str) -> Option<usize> {
        let pods = &self.pods;
        let lo = pods.namespace.partition_point(|ns| ns.as_ref() < namespace);
        let hi = lo + pods.namespace[lo..].partition_point(|ns| ns.as_ref() == namespace);
        pods.name[lo..hi]
            .binary_search_by(|n| n.as_ref().cmp(name))
            .ok()
            .map(|i| lo + i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RES: i64 = 15_000;
    const T0: i64 = 1_700_000_000_000;

    /// A container row: (namespace, pod, container, cpu s, memory B, start s, ts ms).
    type Row<'a> = (&'a str, &'a str, &'a str, f64, f64, f64, i64);

    fn batch(node: (f64, f64, i64), rows: &[Row<'_>]) -> Batch {
        let mut c = ContainerColumns::default();
        for &(ns, pod, name, cpu, mem, start, ts) in rows {
            c.namespace.push(ns.into());
            c.pod.push(pod.into());
            c.container.push(name.into());
            c.cpu_seconds.push(cpu);
            c.memory_bytes.push(mem);
            c.start_time_seconds.push(start);
            c.timestamp_ms.push(ts);
        }
        Batch {
            node: NodeSample {
                cpu_seconds: node.0,
                memory_bytes: node.1,
                timestamp_ms: node.2,
            },
            containers: c,
        }
    }

    fn node_only(cpu: f64, mem: f64, ts: i64) -> Batch {
        batch((cpu, mem, ts), &[])
    }

    fn one(cpu: f64, mem: f64, start: f64, ts: i64) -> Batch {
        batch((1.0, 1.0, ts), &[("ns", "p", "c", cpu, mem, start, ts)])
    }

    /// Long-running container start (seconds): never fresh, never restarted.
    const OLD: f64 = 1.0e9;

    fn names(v: &[Arc<str>]) -> Vec<&str> {
        v.iter().map(|s| &**s).collect()
    }

    #[test]
    fn node_rate_from_two_scrapes() {
        let mut s = Store::new(RES);
        s.ingest("n1", &node_only(100.0, 2048.0, T0), T0);
        assert!(s.snapshot(T0).nodes.is_empty(), "one point is not a rate");
        s.ingest("n1", &node_only(101.5, 4096.0, T0 + 10_000), T0 + 10_000);
        let snap = s.snapshot(T0 + 10_000);
        assert_eq!(names(&snap.nodes.name), ["n1"]);
        // 1.5 core-seconds over 10 s = 0.15 cores.
        assert_eq!(snap.nodes.cpu_nanocores, [150_000_000]);
        assert_eq!(snap.nodes.memory_bytes, [4096]);
        assert_eq!(snap.nodes.timestamp_ms, [T0 + 10_000]);
        assert_eq!(snap.nodes.window_ms, [10_000]);
    }

    #[test]
    fn cpu_and_memory_are_truncated() {
        assert_eq!(cpu_ns(1.0000000019), Some(1_000_000_001));
        assert_eq!(memory_bytes(1.9), Some(1));
        assert_eq!(memory_bytes(0.9), None);
        assert_eq!(cpu_ns(1e-10), None);
        assert_eq!(
            start_ms(1735032785.001),
            1_735_032_785_001,
            "float noise rounds away"
        );
        assert_eq!(start_ms(f64::NAN), NO_START);
        assert_eq!(start_ms(-1.0), NO_START);
        // 1 ns over 3 ms = 333.33 nanocores → 333.
        assert_eq!(rate(3, 11, 0, 10), Some((333, 3)));
        let mut s = Store::new(RES);
        s.ingest("n", &node_only(1.0, 1000.7, T0), T0);
        s.ingest("n", &node_only(2.0, 1000.7, T0 + 3), T0 + 3);
        let snap = s.snapshot(T0 + 3);
        // 1 core-second over 3 ms = 333.33… cores.
        assert_eq!(snap.nodes.cpu_nanocores, [333_333_333_333]);
        assert_eq!(snap.nodes.memory_bytes, [1000]);
    }

    #[test]
    fn rate_does_not_overflow() {
        assert_eq!(rate(1, u64::MAX, 0, 0), Some((u64::MAX, 1)));
        assert_eq!(
            rate(i64::MAX, 10, i64::MIN, 0),
            None,
            "window overflow is no rate"
        );
        assert_eq!(rate(5, 10, 5, 0), None, "zero window is no rate");
    }

    #[test]
    fn prev_is_old_last_when_new_is_later() {
        let mut s = Store::new(RES);
        for (k, cpu) in [10.0, 11.0, 13.0].into_iter().enumerate() {
            let t = T0 + 10_000 * k as i64;
            s.ingest("n", &one(cpu, 5.0, OLD, t), t);
        }
        let snap = s.snapshot(T0 + 20_000);
        // Pair is (11 @ +10 s, 13 @ +20 s): 0.2 cores.
        assert_eq!(snap.containers.cpu_nanocores, [200_000_000]);
        assert_eq!(snap.pods.window_ms, [10_000]);
        assert_eq!(snap.pods.timestamp_ms, [T0 + 20_000]);
    }

    #[test]
    fn identical_samples_keep_the_previous_pair() {
        let mut s = Store::new(RES);
        s.ingest("n", &one(10.0, 5.0, OLD, T0), T0);
        s.ingest("n", &one(11.0, 6.0, OLD, T0 + 10_000), T0 + 10_000);
        let before = s.snapshot(T0 + 10_000);
        // The kubelet had not refreshed: the same samples again.
        s.ingest("n", &one(11.0, 6.0, OLD, T0 + 10_000), T0 + 15_000);
        let after = s.snapshot(T0 + 15_000);
        assert_eq!(after, before);
        assert_eq!(after.containers.cpu_nanocores, [100_000_000]);
        assert_eq!(after.pods.window_ms, [10_000]);
        assert_eq!(s.points(), (1, 1));
    }

    #[test]
    fn identical_first_two_scrapes_serve_nothing() {
        let mut s = Store::new(RES);
        s.ingest("n", &one(10.0, 5.0, OLD, T0), T0);
        s.ingest("n", &one(10.0, 5.0, OLD, T0), T0 + 5_000);
        let snap = s.snapshot(T0 + 5_000);
        assert!(snap.pods.is_empty(), "no zero window served");
        assert!(snap.nodes.is_empty());
        assert_eq!(s.points(), (1, 0));
    }

    #[test]
    fn older_sample_between_prev_and_last_keeps_prev() {
        let mut s = Store::new(RES);
        s.ingest("n", &one(10.0, 5.0, OLD, T0), T0);
        s.ingest("n", &one(12.0, 5.0, OLD, T0 + 20_000), T0 + 20_000);
        // Out of order: earlier than last, later than prev → prev stays.
        s.ingest("n", &one(11.0, 7.0, OLD, T0 + 10_000), T0 + 21_000);
        let snap = s.snapshot(T0 + 21_000);
        assert_eq!(snap.containers.cpu_nanocores, [100_000_000]);
        assert_eq!(snap.containers.memory_bytes, [7]);
        assert_eq!(snap.pods.timestamp_ms, [T0 + 10_000]);
        assert_eq!(snap.pods.window_ms, [10_000]);
    }

    #[test]
    fn sample_older_than_prev_leaves_no_pair() {
        let mut s = Store::new(RES);
        s.ingest("n", &one(10.0, 5.0, OLD, T0), T0);
        s.ingest("n", &one(12.0, 5.0, OLD, T0 + 20_000), T0 + 20_000);
        s.ingest("n", &one(9.0, 5.0, OLD, T0 - 5_000), T0 + 21_000);
        assert!(s.snapshot(T0 + 21_000).pods.is_empty());
        assert_eq!(s.points(), (1, 0));
        // Node points follow the same rule.
        let mut s = Store::new(RES);
        s.ingest("n", &node_only(1.0, 1.0, T0), T0);
        s.ingest("n", &node_only(2.0, 1.0, T0 + 10_000), T0 + 10_000);
        s.ingest("n", &node_only(1.5, 1.0, T0 + 5_000), T0 + 11_000);
        let snap = s.snapshot(T0 + 11_000);
        assert_eq!(snap.nodes.timestamp_ms, [T0 + 5_000]);
        assert_eq!(snap.nodes.window_ms, [5_000]);
        s.ingest("n", &node_only(0.5, 1.0, T0 - 1), T0 + 12_000);
        assert!(s.snapshot(T0 + 12_000).nodes.is_empty());
    }

    #[test]
    fn missing_timestamps_take_the_request_time() {
        let mut s = Store::new(RES);
        s.ingest(
            "n",
            &batch((1.0, 1.0, 0), &[("ns", "p", "c", 1.0, 1.0, OLD, 0)]),
            T0,
        );
        s.ingest(
            "n",
            &batch((2.0, 1.0, 0), &[("ns", "p", "c", 1.5, 1.0, OLD, 0)]),
            T0 + 8_000,
        );
        let snap = s.snapshot(T0 + 8_000);
        assert_eq!(snap.nodes.timestamp_ms, [T0 + 8_000]);
        assert_eq!(snap.nodes.window_ms, [8_000]);
        assert_eq!(snap.nodes.cpu_nanocores, [125_000_000]);
        assert_eq!(snap.pods.timestamp_ms, [T0 + 8_000]);
        assert_eq!(snap.containers.cpu_nanocores, [62_500_000]);
    }

    #[test]
    fn restart_discards_old_points() {
        let t1 = T0 + 10_000;
        let mut s = Store::new(RES);
        s.ingest("n", &one(50.0, 5.0, OLD, T0), T0);
        s.ingest("n", &one(51.0, 5.0, OLD, t1), t1);
        assert_eq!(s.snapshot(t1).pods.len(), 1);
        // Restarted one second after the last sample; counter began anew.
        // Age 29 s ≥ resolution, so no fresh shortcut either.
        let start = (t1 + 1_000) as f64 / 1000.0;
        let t2 = t1 + 30_000;
        s.ingest("n", &one(0.5, 5.0, start, t2), t2);
        assert!(
            s.snapshot(t2).pods.is_empty(),
            "old incarnation's points discarded"
        );
        let t3 = t2 + 10_000;
        s.ingest("n", &one(1.5, 5.0, start, t3), t3);
        assert_eq!(s.snapshot(t3).containers.cpu_nanocores, [100_000_000]);
    }

    #[test]
    fn start_equal_to_old_last_is_a_restart_and_before_is_not() {
        let mut s = Store::new(RES);
        s.ingest("n", &one(50.0, 5.0, OLD, T0), T0);
        let t1 = T0 + 2 * RES; // within the grace, past the fresh-container shortcut
                               // Start exactly at the old last sample: restart (upstream: not Before).
        s.ingest("n", &one(51.0, 5.0, T0 as f64 / 1000.0, t1), t1);
        assert!(s.snapshot(t1).pods.is_empty());
        let mut s = Store::new(RES);
        s.ingest("n", &one(50.0, 5.0, OLD, T0), T0);
        // Start 1 ms before the old last sample: same incarnation.
        s.ingest("n", &one(51.0, 5.0, (T0 - 1) as f64 / 1000.0, t1), t1);
        assert_eq!(s.snapshot(t1).pods.len(), 1);
    }

    #[test]
    fn counter_decrease_is_skipped_for_that_read() {
        let mut s = Store::new(RES);
        s.ingest(
            "n",
            &batch((100.0, 1.0, T0), &[("ns", "p", "c", 50.0, 5.0, OLD, T0)]),
            T0,
        );
        let t1 = T0 + 10_000;
        s.ingest(
            "n",
            &batch((90.0, 1.0, t1), &[("ns", "p", "c", 40.0, 5.0, OLD, t1)]),
            t1,
        );
        let snap = s.snapshot(t1);
        assert!(snap.nodes.is_empty(), "no negative node rate");
        assert!(snap.pods.is_empty(), "no negative container rate");
        let t2 = t1 + 10_000;
        s.ingest(
            "n",
            &batch((91.0, 1.0, t2), &[("ns", "p", "c", 41.0, 5.0, OLD, t2)]),
            t2,
        );
        let snap = s.snapshot(t2);
        assert_eq!(snap.nodes.cpu_nanocores, [100_000_000]);
        assert_eq!(snap.containers.cpu_nanocores, [100_000_000]);
    }

    #[test]
    fn counter_decrease_in_one_container_hides_its_pod() {
        let mut s = Store::new(RES);
        let t1 = T0 + 10_000;
        let rows = |t: i64, a: f64| {
            batch(
                (1.0, 1.0, t),
                &[
                    ("ns", "p", "a", a, 5.0, OLD, t),
                    ("ns", "p", "b", 10.0 + t as f64 / 1e4, 5.0, OLD, t),
                ],
            )
        };
        s.ingest("n", &rows(T0, 50.0), T0);
        s.ingest("n", &rows(t1, 40.0), t1);
        assert!(s.snapshot(t1).pods.is_empty());
    }

    #[test]
    fn fresh_container_has_a_value_after_one_scrape() {
        let mut s = Store::new(RES);
        let start = T0 - 12_000;
        s.ingest("n", &one(3.0, 5.0, start as f64 / 1000.0, T0), T0);
        let snap = s.snapshot(T0);
        // 3 core-seconds since start, 12 s ago.
        assert_eq!(snap.containers.cpu_nanocores, [250_000_000]);
        assert_eq!(snap.pods.window_ms, [12_000]);
        assert_eq!(snap.pods.timestamp_ms, [T0]);
    }

    #[test]
    fn fresh_container_bounds() {
        let served = |age_ms: i64| {
            let mut s = Store::new(RES);
            s.ingest("n", &one(3.0, 5.0, (T0 - age_ms) as f64 / 1000.0, T0), T0);
            !s.snapshot(T0).pods.is_empty()
        };
        assert!(!served(9_999), "younger than 10 s");
        assert!(served(10_000), "exactly 10 s");
        assert!(served(RES - 1));
        assert!(!served(RES), "as old as the resolution");
        // Sub-millisecond start: 9.9995 s of age is still too young.
        let mut s = Store::new(RES);
        s.ingest(
            "n",
            &one(3.0, 5.0, (T0 - 10_000) as f64 / 1000.0 + 0.0005, T0),
            T0,
        );
        assert!(s.snapshot(T0).pods.is_empty());
    }

    #[test]
    fn fresh_shortcut_wins_over_old_points() {
        let mut s = Store::new(RES);
        let start = (T0 - 11_000) as f64 / 1000.0;
        s.ingest("n", &one(1.0, 5.0, start, T0), T0);
        s.ingest("n", &one(2.0, 5.0, start, T0 + 3_000), T0 + 3_000);
        // Still younger than the resolution: the synthetic prev is used.
        let snap = s.snapshot(T0 + 3_000);
        assert_eq!(snap.pods.window_ms, [14_000]);
        assert_eq!(snap.containers.cpu_nanocores, [142_857_142]);
    }

    #[test]
    fn unusable_node_point_is_not_kept() {
        for (cpu, mem) in [
            (f64::NAN, 1.0),
            (1.0, f64::NAN),
            (0.0, 1.0),
            (1.0, 0.0),
            (-1.0, 1.0),
            (f64::INFINITY, 1.0),
            (1.0, f64::NEG_INFINITY),
        ] {
            let mut s = Store::new(RES);
            s.ingest("n", &node_only(1.0, 1.0, T0), T0);
            s.ingest("n", &node_only(2.0, 1.0, T0 + 10_000), T0 + 10_000);
            assert_eq!(s.points(), (1, 0));
            s.ingest("n", &node_only(cpu, mem, T0 + 20_000), T0 + 20_000);
            assert!(s.snapshot(T0 + 20_000).nodes.is_empty(), "{cpu} {mem}");
            assert_eq!(s.points(), (0, 0), "history dropped for {cpu} {mem}");
        }
    }

    #[test]
    fn pod_is_all_or_nothing() {
        let good = |t: i64, cpu: f64| ("ns", "good", "c", cpu, 5.0, OLD, t);
        let cases: [(&str, f64, f64); 5] = [
            ("no memory", 2.0, f64::NAN),
            ("no cpu", f64::NAN, 5.0),
            ("zero cpu", 0.0, 5.0),
            ("zero memory", 2.0, 0.0),
            ("only a start time", f64::NAN, f64::NAN),
        ];
        for (what, cpu, mem) in cases {
            let mut s = Store::new(RES);
            let t1 = T0 + 10_000;
            for (t, c) in [(T0, 1.0), (t1, 2.0)] {
                let bad_cpu = if t == t1 { cpu } else { 1.0 };
                let bad_mem = if t == t1 { mem } else { 5.0 };
                s.ingest(
                    "n",
                    &batch(
                        (1.0, 1.0, t),
                        &[
                            good(t, c),
                            ("ns", "mixed", "ok", c, 5.0, OLD, t),
                            ("ns", "mixed", "bad", bad_cpu, bad_mem, OLD, t),
                        ],
                    ),
                    t,
                );
            }
            let snap = s.snapshot(t1);
            assert_eq!(names(&snap.pods.name), ["good"], "{what}");
            assert_eq!(names(&snap.containers.name), ["c"], "{what}");
            assert_eq!(s.points(), (1, 1), "{what}: the mixed pod holds no points");
        }
    }

    #[test]
    fn pod_needs_every_container_paired() {
        let mut s = Store::new(RES);
        let t1 = T0 + 10_000;
        s.ingest(
            "n",
            &batch((1.0, 1.0, T0), &[("ns", "p", "a", 1.0, 5.0, OLD, T0)]),
            T0,
        );
        // Container b appears: it has no pair yet, so the pod waits.
        let rows = [
            ("ns", "p", "a", 2.0, 5.0, OLD, t1),
            ("ns", "p", "b", 2.0, 5.0, OLD, t1),
        ];
        s.ingest("n", &batch((1.0, 1.0, t1), &rows), t1);
        assert!(s.snapshot(t1).pods.is_empty());
    }

    #[test]
    fn pod_time_comes_from_the_earliest_container() {
        let mut s = Store::new(RES);
        let rows = |t: i64, k: f64| {
            batch(
                (1.0, 1.0, t),
                &[
                    ("ns", "p", "late", k, 5.0, OLD, t + 2_000),
                    ("ns", "p", "early", k, 5.0, OLD, t - 1_000),
                ],
            )
        };
        s.ingest("n", &rows(T0, 1.0), T0);
        s.ingest("n", &rows(T0 + 10_000, 2.0), T0 + 10_000);
        s.ingest("n", &rows(T0 + 25_000, 3.0), T0 + 25_000);
        let snap = s.snapshot(T0 + 25_000);
        assert_eq!(snap.pods.timestamp_ms, [T0 + 24_000]);
        assert_eq!(snap.pods.window_ms, [15_000]);
    }

    #[test]
    fn everything_is_sorted() {
        let mut s = Store::new(RES);
        for (k, t) in [T0, T0 + 10_000].into_iter().enumerate() {
            let c = 1.0 + k as f64;
            s.ingest(
                "node-b",
                &batch(
                    (c, 1.0, t),
                    &[
                        ("zeta", "p1", "z", c, 1.0, OLD, t),
                        ("alpha", "p2", "sidecar", c, 2.0, OLD, t),
                        ("alpha", "p2", "app", c, 3.0, OLD, t),
                    ],
                ),
                t,
            );
            s.ingest(
                "node-a",
                &batch(
                    (c, 1.0, t),
                    &[
                        ("alpha", "p1", "x", c, 4.0, OLD, t),
                        ("beta", "p0", "y", c, 5.0, OLD, t),
                    ],
                ),
                t,
            );
        }
        let snap = s.snapshot(T0 + 10_000);
        assert_eq!(names(&snap.nodes.name), ["node-a", "node-b"]);
        let pods: Vec<(&str, &str, &str)> = (0..snap.pods.len())
            .map(|i| {
                (
                    &*snap.pods.namespace[i],
                    &*snap.pods.name[i],
                    &*snap.pods.node[i],
                )
            })
            .collect();
        assert_eq!(
            pods,
            [
                ("alpha", "p1", "node-a"),
                ("alpha", "p2", "node-b"),
                ("beta", "p0", "node-a"),
                ("zeta", "p1", "node-b"),
            ]
        );
        assert_eq!(snap.pods.container_start, [0, 1, 3, 4, 5]);
        assert_eq!(
            names(&snap.containers.name),
            ["x", "app", "sidecar", "y", "z"]
        );
        assert_eq!(snap.containers.memory_bytes, [4, 3, 2, 5, 1]);
        assert_eq!(snap.pod_index("alpha", "p2"), Some(1));
        assert_eq!(snap.pod_index("zeta", "p1"), Some(3));
        assert_eq!(snap.pod_index("zeta", "p2"), None);
        assert_eq!(snap.pod_index("gamma", "p1"), None);
        assert_eq!(snap.node_index("node-b"), Some(1));
        assert_eq!(snap.node_index("node-c"), None);
    }

    #[test]
    fn containers_missing_from_a_new_batch_are_dropped() {
        let mut s = Store::new(RES);
        let rows = |t: i64, c: f64| {
            [
                ("ns", "stay", "c", c, 1.0, OLD, t),
                ("ns", "gone", "c", c, 1.0, OLD, t),
            ]
        };
        s.ingest("n", &batch((1.0, 1.0, T0), &rows(T0, 1.0)), T0);
        s.ingest(
            "n",
            &batch((1.0, 1.0, T0 + 10_000), &rows(T0 + 10_000, 2.0)),
            T0 + 10_000,
        );
        assert_eq!(s.snapshot(T0 + 10_000).pods.len(), 2);
        let t = T0 + 20_000;
        s.ingest(
            "n",
            &batch((1.0, 1.0, t), &[("ns", "stay", "c", 3.0, 1.0, OLD, t)]),
            t,
        );
        let snap = s.snapshot(t);
        assert_eq!(names(&snap.pods.name), ["stay"]);
        assert_eq!(s.points(), (1, 1));
        // And coming back it starts from scratch.
        let t = T0 + 30_000;
        s.ingest("n", &batch((1.0, 1.0, t), &rows(t, 4.0)), t);
        assert_eq!(names(&s.snapshot(t).pods.name), ["stay"]);
    }

    #[test]
    fn pod_moving_nodes_is_served_once_from_the_newest_report() {
        let mut s = Store::new(RES);
        let on = |t: i64, c: f64| batch((1.0, 1.0, t), &[("ns", "web-0", "c", c, 1.0, OLD, t)]);
        let empty = |t: i64| batch((1.0, 1.0, t), &[]);
        s.ingest("b", &on(T0, 100.0), T0);
        s.ingest("b", &on(T0 + 10_000, 101.0), T0 + 10_000);
        // Recreated on node a; b has not been rescraped yet.
        s.ingest("a", &on(T0 + 11_000, 1.0), T0 + 11_000);
        s.ingest("a", &on(T0 + 21_000, 3.0), T0 + 21_000);
        let snap = s.snapshot(T0 + 21_000);
        assert_eq!(names(&snap.pods.node), ["a"]);
        assert_eq!(snap.containers.cpu_nanocores, [200_000_000]);
        s.ingest("b", &empty(T0 + 25_000), T0 + 25_000);
        let snap = s.snapshot(T0 + 25_000);
        assert_eq!(names(&snap.pods.node), ["a"]);
        assert_eq!(s.points(), (2, 1));
    }

    #[test]
    fn failed_node_is_served_within_grace_with_honest_timestamps() {
        let mut s = Store::new(RES);
        let rows = |t: i64, c: f64| batch((c, 1.0, t), &[("ns", "p", "c", c, 1.0, OLD, t - 500)]);
        s.ingest("n", &rows(T0, 1.0), T0);
        s.ingest("n", &rows(T0 + 10_000, 2.0), T0 + 10_000);
        // Scrapes fail from here on: no ingest.
        let edge = T0 + 10_000 + 2 * RES;
        let snap = s.snapshot(edge);
        assert_eq!(snap.nodes.timestamp_ms, [T0 + 10_000]);
        assert_eq!(snap.pods.timestamp_ms, [T0 + 9_500]);
        assert!(snap.is_ready());
        let snap = s.snapshot(edge + 1);
        assert!(snap.nodes.is_empty());
        assert!(snap.pods.is_empty());
        assert!(!snap.is_ready());
        assert_eq!(s.points(), (1, 1));
    }

    #[test]
    fn one_failed_scrape_keeps_the_pair() {
        let mut s = Store::new(RES);
        let rows = |t: i64, c: f64| batch((c, 1.0, t), &[("ns", "p", "c", c, 1.0, OLD, t)]);
        s.ingest("n", &rows(T0, 1.0), T0);
        // One scrape failed; the next lands late in its stagger.
        let t = T0 + 2 * RES + 4_000;
        s.ingest("n", &rows(t, 2.0), t);
        let snap = s.snapshot(t);
        assert_eq!(snap.nodes.window_ms, [t - T0]);
        assert_eq!(snap.pods.window_ms, [t - T0]);
    }

    #[test]
    fn points_older_than_the_grace_are_not_a_baseline() {
        let mut s = Store::new(RES);
        let rows = |t: i64, c: f64| batch((c, 1.0, t), &[("ns", "p", "c", c, 1.0, OLD, t)]);
        s.ingest("n", &rows(T0, 1.0), T0);
        s.ingest("n", &rows(T0 + RES, 2.0), T0 + RES);
        // A ten-minute outage: the first good scrape after it serves nothing
        // (no rate averaged over the outage), the second a fresh pair.
        let back = T0 + RES + 600_000;
        s.ingest("n", &rows(back, 500.0), back);
        let snap = s.snapshot(back);
        assert!(snap.nodes.is_empty());
        assert!(snap.pods.is_empty());
        s.ingest("n", &rows(back + RES, 501.0), back + RES);
        let snap = s.snapshot(back + RES);
        assert_eq!(snap.nodes.window_ms, [RES]);
        assert_eq!(snap.nodes.cpu_nanocores, [1_000_000_000_000 / RES as u64]);
        assert_eq!(snap.pods.window_ms, [RES]);
    }

    #[test]
    fn forget_node_and_pod() {
        let mut s = Store::new(RES);
        for t in [T0, T0 + 10_000] {
            let c = (t - T0) as f64 / 1000.0 + 1.0;
            let rows = [
                ("ns", "p1", "a", c, 1.0, OLD, t),
                ("ns", "p1", "b", c, 1.0, OLD, t),
                ("ns", "p2", "a", c, 1.0, OLD, t),
            ];
            s.ingest("n1", &batch((c, 1.0, t), &rows), t);
            s.ingest(
                "n2",
                &batch((c, 1.0, t), &[("ns", "p3", "a", c, 1.0, OLD, t)]),
                t,
            );
        }
        assert_eq!(s.points(), (2, 4));
        assert_eq!(s.forget_pod("ns", "p1"), 2);
        assert_eq!(s.forget_pod("ns", "p1"), 0);
        assert_eq!(s.forget_pod("other", "p2"), 0);
        let snap = s.snapshot(T0 + 10_000);
        assert_eq!(names(&snap.pods.name), ["p2", "p3"]);
        assert!(s.forget_node("n2"));
        assert!(!s.forget_node("n2"));
        let snap = s.snapshot(T0 + 10_000);
        assert_eq!(names(&snap.nodes.name), ["n1"]);
        assert_eq!(names(&snap.pods.name), ["p2"]);
        assert_eq!(s.points(), (1, 1));
        assert_eq!(s.node_count(), 1);
    }

    #[test]
    fn readiness_needs_a_node_and_a_pod() {
        let mut s = Store::new(RES);
        assert!(!s.snapshot(T0).is_ready());
        // Node only.
        s.ingest("n", &node_only(1.0, 1.0, T0), T0);
        s.ingest("n", &node_only(2.0, 1.0, T0 + 10_000), T0 + 10_000);
        let snap = s.snapshot(T0 + 10_000);
        assert_eq!((snap.nodes.len(), snap.pods.len()), (1, 0));
        assert!(!snap.is_ready());
        // Pods only (node point unusable).
        let mut s = Store::new(RES);
        for t in [T0, T0 + 10_000] {
            let c = (t - T0) as f64 / 1000.0 + 1.0;
            s.ingest(
                "n",
                &batch((f64::NAN, 1.0, t), &[("ns", "p", "c", c, 1.0, OLD, t)]),
                t,
            );
        }
        let snap = s.snapshot(T0 + 10_000);
        assert_eq!((snap.nodes.len(), snap.pods.len()), (0, 1));
        assert!(!snap.is_ready());
        s.ingest(
            "n",
            &batch(
                (5.0, 1.0, T0 + 20_000),
                &[("ns", "p", "c", 12.0, 1.0, OLD, T0 + 20_000)],
            ),
            T0 + 20_000,
        );
        s.ingest(
            "n",
            &batch(
                (6.0, 1.0, T0 + 30_000),
                &[("ns", "p", "c", 13.0, 1.0, OLD, T0 + 30_000)],
            ),
            T0 + 30_000,
        );
        assert!(s.snapshot(T0 + 30_000).is_ready());
    }

    #[test]
    fn duplicate_rows_first_wins_and_ragged_columns_do_not_panic() {
        let mut s = Store::new(RES);
        for t in [T0, T0 + 10_000] {
            let c = (t - T0) as f64 / 1000.0 + 1.0;
            let rows = [
                ("ns", "p", "c", c, 1.0, OLD, t),
                ("ns", "p", "c", c * 100.0, 9.0, OLD, t),
            ];
            s.ingest("n", &batch((1.0, 1.0, t), &rows), t);
        }
        let snap = s.snapshot(T0 + 10_000);
        assert_eq!(snap.containers.cpu_nanocores, [1_000_000_000]);
        assert_eq!(snap.containers.memory_bytes, [1]);
        let mut b = one(1.0, 1.0, OLD, T0);
        b.containers.timestamp_ms.clear();
        s.ingest("m", &b, T0);
        assert_eq!(s.points(), (2, 1));
    }

    #[test]
    fn names_are_shared_between_store_and_snapshots() {
        let mut s = Store::new(RES);
        for t in [T0, T0 + 10_000, T0 + 20_000] {
            let c = (t - T0) as f64 / 1000.0 + 1.0;
            s.ingest(
                "n",
                &batch((c, 1.0, t), &[("ns", "p", "c", c, 1.0, OLD, t)]),
                t,
            );
        }
        let a = s.snapshot(T0 + 20_000);
        let b = s.snapshot(T0 + 20_000);
        assert!(Arc::ptr_eq(&a.pods.name[0], &b.pods.name[0]));
        assert!(Arc::ptr_eq(&a.containers.name[0], &b.containers.name[0]));
        assert!(Arc::ptr_eq(&a.nodes.name[0], &a.pods.node[0]));
        assert_eq!(s.interned_names(), 4);
    }

    #[test]
    fn departed_names_are_released() {
        let mut s = Store::new(RES);
        for k in 0..3000 {
            let pod = format!("pod-{k}");
            s.ingest(
                "n",
                &batch((1.0, 1.0, T0), &[("ns", &pod, "c", 1.0, 1.0, OLD, T0)]),
                T0,
            );
        }
        // Only the current pod's names (and the node's) stay live.
        assert!(s.interned_names() < 2 * 1024, "{}", s.interned_names());
    }

    #[test]
    fn prefix_key_orders_like_the_strings() {
        let names = [
            "",
            "a",
            "ab",
            "ab\0",
            "ab\0c",
            "abc",
            "abcdefghijkl",
            "abcdefghijkl-0",
            "abcdefghijkm",
            "abcdefghijk",
            "b",
            "zz",
            "\u{e9}t\u{e9}",
            "\u{ff}",
        ];
        for a in names {
            for b in names {
                let (ka, kb) = (prefix_key(3, a), prefix_key(3, b));
                if ka != kb {
                    assert_eq!(ka.cmp(&kb), a.cmp(b), "{a:?} vs {b:?}");
                }
            }
        }
        assert!(prefix_key(1, "zzz") < prefix_key(2, "a"));
    }

    #[test]
    fn snapshot_order_matches_a_plain_string_sort() {
        // Many namespaces and pod names sharing long prefixes, spread over
        // nodes in a scrambled order.
        let mut seed = 0x2545_f491_u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        let mut s = Store::new(RES);
        let mut want: Vec<(String, String)> = Vec::new();
        for node in 0..40 {
            let rows: Vec<(String, String)> = (0..25)
                .map(|k| {
                    let ns = format!("ns-{}", next() % 7);
                    let pod = format!("checkout-service-7c9d8f6b5-{}-{node}-{k}", next() % 1000);
                    (ns, pod)
                })
                .collect();
            let node_name = format!("n{}-{node}", next() % 1000);
            for t in [T0, T0 + 10_000] {
                let c = (t - T0) as f64 / 1000.0 + 1.0;
                let b: Vec<Row<'_>> = rows
                    .iter()
                    .map(|(ns, pod)| (&ns[..], &pod[..], "c", c, 1.0, OLD, t))
                    .collect();
                s.ingest(&node_name, &batch((1.0, 1.0, t), &b), t);
            }
            want.extend(rows);
        }
        want.sort();
        want.dedup();
        let snap = s.snapshot(T0 + 10_000);
        let got: Vec<(String, String)> = (0..snap.pods.len())
            .map(|i| {
                (
                    snap.pods.namespace[i].to_string(),
                    snap.pods.name[i].to_string(),
                )
            })
            .collect();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "order differs from a plain string sort");
    }
}
