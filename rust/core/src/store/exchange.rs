//! Points exchanged between sharded replicas (`--sharding=lease`).
//!
//! Each replica exports the points it scraped itself — `last` and `prev` per
//! node and container, so that a peer adopting one of its nodes computes a
//! rate from its very first scrape — and imports its peers'. The body is one
//! compact binary document per peer per cycle:
//!
//! ```text
//! "KMPT" version(1) codec(1: raw deflate)
//! deflate(
//!   strings:  n, then n × (len, utf-8)          every name once
//!   failing:  k, then k × string id             nodes the exporter failed to scrape
//!   nodes:    m, then m × node
//! )
//! node:      name id, age ms (export time − last good scrape), flags (last, prev),
//!            [last ts (zigzag), cpu ns, memory B], [ts delta to last (zigzag), cpu delta],
//!            containers: c, then c × container (sorted by namespace, pod, name)
//! container: namespace, pod, name ids, flags (prev, start),
//!            [last ts − start (zigzag)], last ts − node base (zigzag), cpu ns, memory B,
//!            [ts delta to last (zigzag), cpu delta]
//! ```
//!
//! Integers are LEB128 varints (signed ones zigzag); timestamps travel as
//! deltas and CPU counters of `prev` as differences, which is what keeps a
//! container at a few bytes before compression. Ages are relative, so clock
//! skew between replicas does not move the grace period; sample timestamps are
//! the kubelets' own.
//!
//! Decoding checks every length and id against what remains and inflates at
//! most a given number of bytes: a malformed or hostile body is an error, never
//! a panic nor an allocation it did not pay for. Importing merges per node:
//! the side scraped more recently decides which containers exist, and each
//! container keeps the newest sample as `last` and the next older one as
//! `prev` from both sides' points — newest sample wins, and no rate is lost at
//! a handoff.

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;

use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use flate2::Compression;

use crate::wire::proto::write_varint;

use super::{stale_after_ms, Containers, NodeEntry, NodePoint, Store, NO_START};

const MAGIC: &[u8; 4] = b"KMPT";
const VERSION: u8 = 1;
const CODEC_DEFLATE: u8 = 1;
const HEADER: usize = 6;

const HAS_LAST: u8 = 1;
const HAS_PREV: u8 = 2;
const HAS_START: u8 = 2; // container flags: bit 0 is HAS_PREV's place
const C_HAS_PREV: u8 = 1;

/// Deflate level: level 1 already takes the names' and deltas' redundancy,
/// at a fraction of the default level's time.
const LEVEL: u32 = 1;

/// A body that cannot be imported; nothing of it was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeError(pub String);

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ExchangeError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ExchangeError> {
    Err(ExchangeError(msg.into()))
}

// --- wire helpers --------------------------------------------------------------------

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    write_varint(out, zigzag(v));
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn u8(&mut self) -> Result<u8, ExchangeError> {
        let Some(&b) = self.buf.get(self.pos) else {
            return err("truncated body");
        };
        self.pos += 1;
        Ok(b)
    }

    fn uvarint(&mut self) -> Result<u64, ExchangeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if shift == 63 && b > 1 {
                    return err("varint overflows 64 bits");
                }
                return Ok(v);
            }
        }
        err("varint longer than 10 bytes")
    }

    fn ivarint(&mut self) -> Result<i64, ExchangeError> {
        Ok(unzigzag(self.uvarint()?))
    }

    /// A count of items each taking at least `min_bytes`: bounded by what remains.
    fn count(&mut self, min_bytes: usize, what: &str) -> Result<usize, ExchangeError> {
        let n = self.uvarint()?;
        if n > (self.remaining() / min_bytes.max(1)) as u64 {
            return err(format!("{what} count {n} exceeds the body"));
        }
        Ok(n as usize)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], ExchangeError> {
        if n > self.remaining() {
            return err("truncated body");
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn id(&mut self, table: usize) -> Result<u32, ExchangeError> {
        let id = self.uvarint()?;
        if id >= table as u64 {
            return err(format!("name id {id} out of range ({table} names)"));
        }
        Ok(id as u32)
    }
}

// --- decoded form --------------------------------------------------------------------

/// A node point as exchanged (`prev` carries no memory: only `last`'s is served).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Point {
    ts_ms: i64,
    cpu_ns: u64,
    memory_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct DecodedContainer {
    namespace: u32,
    pod: u32,
    name: u32,
    start_ms: i64,
    last: Point,
    prev: Option<(i64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct DecodedNode {
    name: u32,
    age_ms: i64,
    last: Option<Point>,
    prev: Option<Point>,
    containers: Vec<DecodedContainer>,
}

/// A peer's body, decoded and validated, not yet applied to a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    strings: Vec<String>,
    failing: Vec<u32>,
    nodes: Vec<DecodedNode>,
}

/// What an import brought: the nodes the peer has points for, and those it
/// failed to scrape in its last cycle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imported {
    pub nodes: Vec<String>,
    pub failing: Vec<String>,
    pub containers: usize,
}

impl Decoded {
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

// --- export ---------------------------------------------------------------------------

struct Names {
    ids: HashMap<usize, u32>,
    table: Vec<u8>,
    count: u64,
}

impl Names {
    fn new() -> Self {
        Names {
            ids: HashMap::new(),
            table: Vec::new(),
            count: 0,
        }
    }

    /// The id of an interned name: equal names share one allocation, so the
    /// pointer identifies the name.
    fn id(&mut self, name: &Arc<str>) -> u32 {
        let key = Arc::as_ptr(name) as *const u8 as usize;
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = self.push(name);
        self.ids.insert(key, id);
        id
    }

    /// A name outside the store (listed once, never looked up again).
    fn push(&mut self, name: &str) -> u32 {
        let id = self.count as u32;
        self.count += 1;
        write_varint(&mut self.table, name.len() as u64);
        self.table.extend_from_slice(name.as_bytes());
        id
    }
}

impl Store {
    /// This replica's own points (nodes scraped here whose last good scrape is
    /// within the grace period at `now_ms`), and the nodes it failed to scrape,
    /// as one compressed body for its peers.
    pub fn export_points(&self, now_ms: i64, failing: &[&str]) -> Vec<u8> {
        let horizon = now_ms.saturating_sub(2 * self.resolution_ms);
        let mut names = Names::new();
        let mut body = Vec::new();
        let failing_ids: Vec<u32> = failing.iter().map(|n| names.push(n)).collect();
        let entries: Vec<&NodeEntry> = self
            .nodes
            .values()
            .filter(|e| e.local && e.scraped_ms >= horizon)
            .collect();
        write_varint(&mut body, entries.len() as u64);
        for e in entries {
            write_varint(&mut body, u64::from(names.id(&e.name)));
            write_varint(&mut body, now_ms.saturating_sub(e.scraped_ms).max(0) as u64);
            let flags =
                u8::from(e.last.is_some()) * HAS_LAST + u8::from(e.prev.is_some()) * HAS_PREV;
            body.push(flags);
            let base = e.last.map_or(0, |p| p.ts_ms);
            if let Some(last) = e.last {
                put_ivarint(&mut body, last.ts_ms);
                write_varint(&mut body, last.cpu_ns);
                write_varint(&mut body, last.memory_bytes);
            }
            if let Some(prev) = e.prev {
                put_ivarint(&mut body, base.wrapping_sub(prev.ts_ms));
                let last_cpu = e.last.map_or(0, |p| p.cpu_ns);
                write_varint(&mut body, last_cpu.wrapping_sub(prev.cpu_ns));
            }
            let c = &e.containers;
            write_varint(&mut body, c.len() as u64);
            for i in 0..c.len() {
                write_varint(&mut body, u64::from(names.id(&c.namespace[i])));
                write_varint(&mut body, u64::from(names.id(&c.pod[i])));
                write_varint(&mut body, u64::from(names.id(&c.name[i])));
                let has_start = c.start_ms[i] != NO_START;
                body.push(u8::from(c.has_prev[i]) * C_HAS_PREV + u8::from(has_start) * HAS_START);
                if has_start {
                    put_ivarint(&mut body, c.last_ts[i].wrapping_sub(c.start_ms[i]));
                }
                put_ivarint(&mut body, c.last_ts[i].wrapping_sub(base));
                write_varint(&mut body, c.last_cpu[i]);
                write_varint(&mut body, c.last_mem[i]);
                if c.has_prev[i] {
                    put_ivarint(&mut body, c.last_ts[i].wrapping_sub(c.prev_ts[i]));
                    write_varint(&mut body, c.last_cpu[i].wrapping_sub(c.prev_cpu[i]));
                }
            }
        }
        let mut plain = Vec::with_capacity(names.table.len() + body.len() + 16);
        write_varint(&mut plain, names.count);
        plain.extend_from_slice(&names.table);
        write_varint(&mut plain, failing_ids.len() as u64);
        for id in failing_ids {
            write_varint(&mut plain, u64::from(id));
        }
        plain.extend_from_slice(&body);

        let mut out = Vec::with_capacity(plain.len() / 3 + HEADER);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(CODEC_DEFLATE);
        let mut enc = DeflateEncoder::new(out, Compression::new(LEVEL));
        // Writing into a Vec cannot fail.
        let _ = enc.write_all(&plain);
        enc.finish().unwrap_or_default()
    }
}

// --- decode ---------------------------------------------------------------------------

/// Inflate and validate a peer's body; at most `max_decoded` bytes are
/// inflated (a larger body is an error, whatever its compressed size).
pub fn decode(data: &[u8], max_decoded: usize) -> Result<Decoded, ExchangeError> {
    if data.len() < HEADER || &data[..4] != MAGIC {
        return err("not a kubemetrics points body");
    }
    if data[4] != VERSION {
        return err(format!(
            "points body version {} (this replica reads {VERSION})",
            data[4]
        ));
    }
    if data[5] != CODEC_DEFLATE {
        return err(format!("unknown points codec {}", data[5]));
    }
    let mut plain = Vec::new();
    let limit = max_decoded as u64;
    DeflateDecoder::new(&data[HEADER..])
        .take(limit.saturating_add(1))
        .read_to_end(&mut plain)
        .or_else(|e| err(format!("corrupt points body: {e}")))?;
    if plain.len() as u64 > limit {
        return err(format!("points body inflates past {max_decoded} bytes"));
    }
    parse(&plain)
}

fn parse(plain: &[u8]) -> Result<Decoded, ExchangeError> {
    let mut r = Reader { buf: plain, pos: 0 };
    let n = r.count(1, "name")?;
    let mut strings = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.uvarint()?;
        let len = usize::try_from(len).or_else(|_| err("name length overflows"))?;
        let bytes = r.bytes(len)?;
        let s = std::str::from_utf8(bytes).or_else(|_| err("a name is not UTF-8"))?;
        strings.push(s.to_owned());
    }
    let k = r.count(1, "failing node")?;
    let mut failing = Vec::with_capacity(k);
    for _ in 0..k {
        failing.push(r.id(n)?);
    }
    // A node takes at least 4 bytes (name, age, flags, container count); a
    // container at least 7 (three ids, flags, timestamp, CPU, memory).
    let m = r.count(4, "node")?;
    let mut nodes = Vec::with_capacity(m);
    for _ in 0..m {
        let name = r.id(n)?;
        let age = r.uvarint()?;
        let age_ms = i64::try_from(age).or_else(|_| err("node age overflows"))?;
        let flags = r.u8()?;
        let mut last = None;
        if flags & HAS_LAST != 0 {
            last = Some(Point {
                ts_ms: r.ivarint()?,
                cpu_ns: r.uvarint()?,
                memory_bytes: r.uvarint()?,
            });
        }
        let base = last.map_or(0, |p| p.ts_ms);
        let mut prev = None;
        if flags & HAS_PREV != 0 {
            let ts = base.wrapping_sub(r.ivarint()?);
            let cpu = last.map_or(0, |p| p.cpu_ns).wrapping_sub(r.uvarint()?);
            prev = Some(Point {
                ts_ms: ts,
                cpu_ns: cpu,
                memory_bytes: 0,
            });
        }
        let c = r.count(7, "container")?;
        let mut containers = Vec::with_capacity(c);
        for _ in 0..c {
            let namespace = r.id(n)?;
            let pod = r.id(n)?;
            let cname = r.id(n)?;
            let cflags = r.u8()?;
            let since_start = if cflags & HAS_START != 0 {
                Some(r.ivarint()?)
            } else {
                None
            };
            let ts = base.wrapping_add(r.ivarint()?);
            let cpu = r.uvarint()?;
            let mem = r.uvarint()?;
            let prev = if cflags & C_HAS_PREV != 0 {
                let pts = ts.wrapping_sub(r.ivarint()?);
                let pcpu = cpu.wrapping_sub(r.uvarint()?);
                Some((pts, pcpu))
            } else {
                None
            };
            containers.push(DecodedContainer {
                namespace,
                pod,
                name: cname,
                start_ms: since_start.map_or(NO_START, |d| ts.wrapping_sub(d)),
                last: Point {
                    ts_ms: ts,
                    cpu_ns: cpu,
                    memory_bytes: mem,
                },
                prev,
            });
        }
        let key = |c: &DecodedContainer| {
            (
                strings[c.namespace as usize].as_str(),
                strings[c.pod as usize].as_str(),
                strings[c.name as usize].as_str(),
            )
        };
        // The store's merge joins sorted tables: refuse what an exporter
        // could never have written.
        if containers.windows(2).any(|w| key(&w[0]) >= key(&w[1])) {
            return err("containers not sorted and unique");
        }
        nodes.push(DecodedNode {
            name,
            age_ms,
            last,
            prev,
            containers,
        });
    }
    if r.remaining() != 0 {
        return err("trailing bytes after the last node");
    }
    Ok(Decoded {
        strings,
        failing,
        nodes,
    })
}

// --- import ---------------------------------------------------------------------------

/// `(last, prev)`, each a timestamped point.
type LastPrev<P> = (Option<(i64, P)>, Option<(i64, P)>);

/// The newest of `lasts` (points carrying memory) and the newest strictly
/// older point of `all`: what `last`/`prev` are after a merge.
///
/// Ties go to the first candidate given (the side scraped more recently).
fn top_two<P: Copy>(
    lasts: impl Iterator<Item = (i64, P)>,
    all: impl Iterator<Item = (i64, P)>,
) -> LastPrev<P> {
    let newest = |best: Option<(i64, P)>, p: (i64, P)| match best {
        Some(b) if b.0 >= p.0 => Some(b),
        _ => Some(p),
    };
    let last = lasts.fold(None, newest);
    let prev = last.and_then(|(lts, _)| all.filter(|(ts, _)| *ts < lts).fold(None, newest));
    (last, prev)
}

fn merge_containers(newer: Containers, older: &Containers) -> Containers {
    let mut out = newer;
    let mut j = 0;
    for i in 0..out.len() {
        let key = (&*out.namespace[i], &*out.pod[i], &*out.name[i]);
        while j < older.len() && (&*older.namespace[j], &*older.pod[j], &*older.name[j]) < key {
            j += 1;
        }
        if j >= older.len() || (&*older.namespace[j], &*older.pod[j], &*older.name[j]) != key {
            continue;
        }
        // Another incarnation's points never pair with this one's.
        if older.start_ms[j] != out.start_ms[i] {
            continue;
        }
        let new_last = (out.last_ts[i], (out.last_cpu[i], out.last_mem[i]));
        let old_last = (older.last_ts[j], (older.last_cpu[j], older.last_mem[j]));
        // (`prev` points carry no memory: only `last`'s is ever served.)
        let mut all = vec![new_last, old_last];
        if out.has_prev[i] {
            all.push((out.prev_ts[i], (out.prev_cpu[i], 0)));
        }
        if older.has_prev[j] {
            all.push((older.prev_ts[j], (older.prev_cpu[j], 0)));
        }
        let (last, prev) = top_two([new_last, old_last].into_iter(), all.into_iter());
        if let Some((ts, (cpu, mem))) = last {
            out.last_ts[i] = ts;
            out.last_cpu[i] = cpu;
            out.last_mem[i] = mem;
        }
        out.has_prev[i] = prev.is_some();
        let (pts, (pcpu, _)) = prev.unwrap_or((0, (0, 0)));
        out.prev_ts[i] = pts;
        out.prev_cpu[i] = pcpu;
    }
    out
}

fn merge_node_points(
    newer: (Option<NodePoint>, Option<NodePoint>),
    older: (Option<NodePoint>, Option<NodePoint>),
) -> (Option<NodePoint>, Option<NodePoint>) {
    // The newest scrape found no usable node point: that drops the node's
    // history, as an ingest does.
    if newer.0.is_none() {
        return (None, None);
    }
    let pts = |p: Option<NodePoint>| p.map(|p| (p.ts_ms, p));
    let lasts = [pts(newer.0), pts(older.0)].into_iter().flatten();
    let all = [pts(newer.0), pts(newer.1), pts(older.0), pts(older.1)]
        .into_iter()
        .flatten();
    let (last, prev) = top_two(lasts, all);
    (last.map(|(_, p)| p), prev.map(|(_, p)| p))
}

impl Store {
    /// Merge a decoded peer body in at `now_ms` (this replica's clock): a node
    /// last scraped `age` ago by the peer counts as scraped at `now − age`.
    pub fn import_points(&mut self, d: &Decoded, now_ms: i64) -> Imported {
        let names: Vec<Arc<str>> = d.strings.iter().map(|s| self.interner.intern(s)).collect();
        let stale = stale_after_ms(self.resolution_ms);
        let mut imported = Imported {
            failing: d
                .failing
                .iter()
                .map(|&i| d.strings[i as usize].clone())
                .collect(),
            ..Imported::default()
        };
        for node in &d.nodes {
            let name = &names[node.name as usize];
            let scraped_ms = now_ms.saturating_sub(node.age_ms);
            let point = |p: Option<Point>| {
                p.map(|p| NodePoint {
                    ts_ms: p.ts_ms,
                    cpu_ns: p.cpu_ns,
                    memory_bytes: p.memory_bytes,
                })
            };
            let (last, prev) = (point(node.last), point(node.prev));
            let mut c = Containers::with_capacity(node.containers.len());
            for dc in &node.containers {
                c.namespace.push(Arc::clone(&names[dc.namespace as usize]));
                c.pod.push(Arc::clone(&names[dc.pod as usize]));
                c.name.push(Arc::clone(&names[dc.name as usize]));
                c.start_ms.push(dc.start_ms);
                c.last_ts.push(dc.last.ts_ms);
                c.last_cpu.push(dc.last.cpu_ns);
                c.last_mem.push(dc.last.memory_bytes);
                c.has_prev.push(dc.prev.is_some());
                let (pts, pcpu) = dc.prev.unwrap_or((0, 0));
                c.prev_ts.push(pts);
                c.prev_cpu.push(pcpu);
            }
            imported.containers += c.len();
            imported.nodes.push(name.to_string());
            match self.nodes.get_mut(&**name) {
                None => {
                    self.nodes.insert(
                        Arc::clone(name),
                        NodeEntry {
                            name: Arc::clone(name),
                            scraped_ms,
                            local: false,
                            last,
                            prev,
                            containers: c,
                        },
                    );
                }
                Some(entry) => {
                    let theirs_newer = scraped_ms > entry.scraped_ms;
                    // Points past the grace period are history, not a baseline.
                    let both = (scraped_ms - entry.scraped_ms).abs() <= stale;
                    let ours = std::mem::take(&mut entry.containers);
                    if theirs_newer {
                        let old = (entry.last, entry.prev);
                        (entry.last, entry.prev) = if both {
                            merge_node_points((last, prev), old)
                        } else {
                            (last, prev)
                        };
                        entry.containers = if both { merge_containers(c, &ours) } else { c };
                        entry.scraped_ms = scraped_ms;
                        entry.local = false;
                    } else if both {
                        (entry.last, entry.prev) =
                            merge_node_points((entry.last, entry.prev), (last, prev));
                        entry.containers = merge_containers(ours, &c);
                    } else {
                        entry.containers = ours;
                    }
                }
            }
        }
        self.interner.maybe_prune();
        imported
    }
}

#[cfg(test)]
mod tests;
