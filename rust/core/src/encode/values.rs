//! The formatted values of every served item, built once per view: the part
//! of a response that costs CPU to produce (canonical quantity, duration and
//! timestamp text) and that every format shares. The framing of each format
//! (JSON keys, protobuf tags and lengths, Table cells) is cheap and is added
//! per request from these values, the snapshot's names and the labels.
//!
//! One arena, one offset per item. Each value is a length byte then its text:
//! - node: timestamp, window, cpu, memory;
//! - pod: timestamp, window, cpu and memory summed over its containers (the
//!   Table's cells), then cpu and memory of each container in order.
//!
//! Measured at 150,000 pods: the whole view 74 MiB with per-format fragments,
//! 20 MiB with these values (docs/PERFORMANCE.md).

use super::{json, protobuf, table, EncodeError};
use crate::inventory::LabelSet;
use crate::snapshot::Snapshot;
use crate::view::{Kind, View};
use crate::wire::quantity::{
    ms_to_ns, ms_to_seconds, write_cpu, write_duration_ns, write_memory, write_rfc3339,
};

#[derive(Debug, Default)]
pub struct Values {
    arena: Vec<u8>,
    /// Item `i` is `arena[start[i]..start[i + 1]]`.
    start: Vec<u32>,
    /// Per item, the sizes of its request-independent pieces, so a response's
    /// exact length is arithmetic, not a dry run of the writers.
    sizes: Vec<Sizes>,
}

/// Bytes of an item's pieces that do not depend on the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sizes {
    /// JSON metadata without the time and the labels.
    pub json_meta: u32,
    /// JSON after the metadata.
    pub json_rest: u32,
    /// Protobuf message after the metadata.
    pub proto_tail: u32,
    /// A Table row's cells (up to its object).
    pub table_cells: u32,
}

/// Appends `write`'s text as one length-prefixed value.
fn push(arena: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let at = arena.len();
    arena.push(0);
    write(arena);
    // Every writer emits at most ~30 bytes; clamp rather than trust that.
    let len = (arena.len() - at - 1).min(255);
    arena.truncate(at + 1 + len);
    arena[at] = len as u8;
}

fn saturating_sum(values: &[u64]) -> u64 {
    values.iter().fold(0u64, |a, &b| a.saturating_add(b))
}

impl Values {
    /// Values of the served items of `kind` (others stay empty).
    pub fn build(view: &View, kind: Kind) -> Result<Values, EncodeError> {
        let snap: &Snapshot = view.snapshot();
        let n = view.len(kind);
        let mut arena = Vec::with_capacity(n * 48);
        let mut start = Vec::with_capacity(n + 1);
        let mut sizes = Vec::with_capacity(n);
        start.push(0);
        let empty = LabelSet::empty();
        for i in 0..n {
            let served = view.served(kind, i).is_some();
            if served {
                match kind {
                    Kind::Node => {
                        let s = &snap.nodes;
                        push(&mut arena, |o| {
                            write_rfc3339(o, ms_to_seconds(s.timestamp_ms[i]))
                        });
                        push(&mut arena, |o| {
                            write_duration_ns(o, ms_to_ns(s.window_ms[i]))
                        });
                        push(&mut arena, |o| write_cpu(o, s.cpu_nanocores[i]));
                        push(&mut arena, |o| write_memory(o, s.memory_bytes[i]));
                    }
                    Kind::Pod => {
                        let p = &snap.pods;
                        let c = &snap.containers;
                        let range = p.containers_of(i);
                        push(&mut arena, |o| {
                            write_rfc3339(o, ms_to_seconds(p.timestamp_ms[i]))
                        });
                        push(&mut arena, |o| {
                            write_duration_ns(o, ms_to_ns(p.window_ms[i]))
                        });
                        let cpu = saturating_sum(&c.cpu_nanocores[range.clone()]);
                        let mem = saturating_sum(&c.memory_bytes[range.clone()]);
                        push(&mut arena, |o| write_cpu(o, cpu));
                        push(&mut arena, |o| write_memory(o, mem));
                        for j in range {
                            push(&mut arena, |o| write_cpu(o, c.cpu_nanocores[j]));
                            push(&mut arena, |o| write_memory(o, c.memory_bytes[j]));
                        }
                    }
                }
            }
            let lo = *start.last().unwrap_or(&0) as usize;
            start.push(u32::try_from(arena.len()).map_err(|_| EncodeError::TooLarge)?);
            let mut size = Sizes::default();
            if served {
                let fields = Fields { rest: &arena[lo..] };
                let mut n = [0usize; 3];
                json::metadata(&mut |b: &[u8]| n[0] += b.len(), snap, kind, i, b"", &empty);
                json::rest(&mut |b: &[u8]| n[1] += b.len(), snap, kind, i, fields);
                table::cells(&mut |b: &[u8]| n[2] += b.len(), snap, kind, i, fields);
                let too_large = |_| EncodeError::TooLarge;
                size.json_meta = u32::try_from(n[0]).map_err(too_large)?;
                size.json_rest = u32::try_from(n[1]).map_err(too_large)?;
                size.table_cells = u32::try_from(n[2]).map_err(too_large)?;
                size.proto_tail = u32::try_from(protobuf::tail_len(snap, kind, i, fields))
                    .map_err(|_| EncodeError::TooLarge)?;
            }
            sizes.push(size);
        }
        arena.shrink_to_fit();
        Ok(Values {
            arena,
            start,
            sizes,
        })
    }

    /// The request-independent sizes of item `i`.
    pub fn sizes(&self, i: usize) -> Sizes {
        self.sizes.get(i).copied().unwrap_or_default()
    }

    /// The values of item `i`, in order.
    pub fn item(&self, i: usize) -> Fields<'_> {
        let lo = self.start.get(i).copied().unwrap_or(0) as usize;
        let hi = self.start.get(i + 1).copied().unwrap_or(0) as usize;
        Fields {
            rest: self.arena.get(lo..hi).unwrap_or(&[]),
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity()
            + self.start.capacity() * 4
            + self.sizes.capacity() * std::mem::size_of::<Sizes>()
    }
}

/// Reads one item's values in order; past the end every value is empty (the
/// arena is ours, so that only happens with a bug, and then nothing panics).
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub fn next_value(&mut self) -> &'a [u8] {
        let Some((&len, tail)) = self.rest.split_first() else {
            return &[];
        };
        let len = (len as usize).min(tail.len());
        let (value, rest) = tail.split_at(len);
        self.rest = rest;
        value
    }
}

/// A node's values.
pub struct NodeValues<'a> {
    pub timestamp: &'a [u8],
    pub window: &'a [u8],
    pub cpu: &'a [u8],
    pub memory: &'a [u8],
}

/// A pod's values; `containers` yields (cpu, memory) per container.
pub struct PodValues<'a> {
    pub timestamp: &'a [u8],
    pub window: &'a [u8],
    pub cpu_sum: &'a [u8],
    pub memory_sum: &'a [u8],
    pub containers: Fields<'a>,
}

impl<'a> Fields<'a> {
    pub fn node(mut self) -> NodeValues<'a> {
        NodeValues {
            timestamp: self.next_value(),
            window: self.next_value(),
            cpu: self.next_value(),
            memory: self.next_value(),
        }
    }

    pub fn pod(mut self) -> PodValues<'a> {
        PodValues {
            timestamp: self.next_value(),
            window: self.next_value(),
            cpu_sum: self.next_value(),
            memory_sum: self.next_value(),
            containers: self,
        }
    }

    /// The next container's (cpu, memory).
    pub fn container(&mut self) -> (&'a [u8], &'a [u8]) {
        (self.next_value(), self.next_value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_length_prefixed_and_never_overrun() {
        let mut arena = Vec::new();
        push(&mut arena, |o| o.extend_from_slice(b"12n"));
        push(&mut arena, |o| o.extend_from_slice(&[b'x'; 300]));
        push(&mut arena, |_| {});
        assert_eq!(&arena[..4], b"\x0312n");
        assert_eq!(arena[4], 255, "clamped");
        let v = Values {
            start: vec![0, arena.len() as u32],
            arena,
            sizes: vec![Sizes::default()],
        };
        let mut f = v.item(0);
        assert_eq!(f.next_value(), b"12n");
        assert_eq!(f.next_value().len(), 255);
        assert_eq!(f.next_value(), b"");
        assert_eq!(f.next_value(), b"", "past the end: empty");
        assert_eq!(v.item(7).next_value(), b"", "no such item: empty");
    }
}
