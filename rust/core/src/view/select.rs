//! Selection over a view, in O(terms + matches).
//!
//! Every term that can name its candidates does so from an index, restricted
//! to the namespace's range by binary search: `k=v` and `k in (…)` from the
//! value postings (one hash lookup per value, so a long `in` list costs its
//! length, not its length times the pods), `k`, `k>n`, `k<n` from the key's
//! postings, `spec.nodeName=x` from the node index, `metadata.name=x` by
//! binary search. The smallest source wins; its candidates are then checked
//! against every term. Negative terms (`!=`, `notin`, `!k`) only filter: a
//! selector made only of them walks the namespace's range, which is what it
//! matches anyway in any realistic cluster.

use std::ops::Range;

use super::index::restrict;
use super::{Kind, View};
use crate::selector::{Field, FieldSelector, LabelSelector, Op};

/// What a list request asks for.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// Pods only: the namespace of a namespaced list.
    pub namespace: Option<&'a str>,
    pub labels: &'a LabelSelector,
    pub fields: &'a FieldSelector,
}

/// Where the candidates come from.
enum Source<'v> {
    /// No item can match.
    Empty,
    /// Every item of a range.
    Range(Range<u32>),
    /// Sorted ids.
    Ids(Vec<u32>),
    /// Sorted, pairwise disjoint lists (the values of one key).
    Lists(Vec<&'v [u32]>),
}

impl Source<'_> {
    fn size(&self) -> usize {
        match self {
            Source::Empty => 0,
            Source::Range(r) => r.len(),
            Source::Ids(v) => v.len(),
            Source::Lists(l) => l.iter().map(|x| x.len()).sum(),
        }
    }
}

impl View {
    /// How many candidates selecting `q` examines: what a caller weighs to
    /// decide whether the work is worth a thread hop.
    pub fn cost(&self, kind: Kind, q: &Query<'_>) -> usize {
        self.plan(kind, q).0.size()
    }

    /// Indices of the served items matching `q`, in item order (nodes by
    /// name, pods by namespace then name).
    pub fn select(&self, kind: Kind, q: &Query<'_>) -> Vec<u32> {
        let alive = self.check_liveness();
        let (source, by) = self.plan(kind, q);
        // The requirement that named the candidates holds for all of them.
        let keep = |i: u32| self.admits(kind, i as usize, q, alive, by);
        match source {
            Source::Empty => Vec::new(),
            Source::Range(r) => r.filter(|&i| keep(i)).collect(),
            Source::Ids(v) => v.into_iter().filter(|&i| keep(i)).collect(),
            Source::Lists(lists) => match lists[..] {
                [one] => one.iter().copied().filter(|&i| keep(i)).collect(),
                _ => {
                    let mut all = union(&lists);
                    all.retain(|&i| keep(i));
                    all
                }
            },
        }
    }

    /// The same answer by testing every item in turn: the definition
    /// [`View::select`] must agree with (property tests), and a baseline.
    pub fn select_scan(&self, kind: Kind, q: &Query<'_>) -> Vec<u32> {
        let alive = self.check_liveness();
        (0..self.len(kind) as u32)
            .filter(|&i| self.admits(kind, i as usize, q, alive, None))
            .collect()
    }

    /// Item `i` is served and matches every term of `q` (but label
    /// requirement `skip`, known to hold).
    fn admits(
        &self,
        kind: Kind,
        i: usize,
        q: &Query<'_>,
        alive: bool,
        skip: Option<usize>,
    ) -> bool {
        let Some(Some(m)) = self.collection(kind).members.get(i) else {
            return false;
        };
        if alive && !m.token.is_alive() {
            return false;
        }
        let labels = || {
            q.labels
                .requirements()
                .iter()
                .enumerate()
                .all(|(k, r)| Some(k) == skip || r.matches(&m.labels))
        };
        match kind {
            Kind::Node => {
                let name = self.snap.nodes.name[i].as_ref();
                q.fields.matches(|f| match f {
                    Field::Name => name,
                    Field::Namespace | Field::NodeName => "",
                }) && labels()
            }
            Kind::Pod => {
                let p = &self.snap.pods;
                let ns = p.namespace[i].as_ref();
                q.namespace.is_none_or(|want| want == ns)
                    && q.fields.matches(|f| match f {
                        Field::Name => p.name[i].as_ref(),
                        Field::Namespace => ns,
                        Field::NodeName => p.node[i].as_ref(),
                    })
                    && labels()
            }
        }
    }

    /// The smallest candidate source for `q`, and the label requirement that
    /// produced it (if one did).
    fn plan(&self, kind: Kind, q: &Query<'_>) -> (Source<'_>, Option<usize>) {
        // The range every match lies in: a namespace's pods, or everything.
        let mut namespace = match kind {
            Kind::Pod => q.namespace,
            Kind::Node => None,
        };
        for (f, equal, v) in q.fields.terms() {
            if f == Field::Namespace && equal {
                match kind {
                    // Nodes have no namespace: only `metadata.namespace=` matches.
                    Kind::Node if !v.is_empty() => return (Source::Empty, None),
                    Kind::Node => {}
                    Kind::Pod if namespace.is_some_and(|ns| ns != v) => {
                        return (Source::Empty, None)
                    }
                    Kind::Pod => namespace = Some(v),
                }
            }
        }
        let range = match namespace {
            Some(ns) => match self.namespace_range(ns) {
                Some(r) => r,
                None => return (Source::Empty, None),
            },
            None => 0..self.len(kind) as u32,
        };
        let mut best = Source::Range(range.clone());
        let mut by: Option<usize> = None;
        // A source that can match nothing ends the search.
        macro_rules! try_offer {
            ($s:expr, $req:expr) => {
                let s = $s;
                let size = s.size();
                if size == 0 {
                    return (Source::Empty, None);
                }
                if size < best.size() {
                    best = s;
                    by = $req;
                }
            };
        }
        if let Some(name) = q.fields.required(Field::Name) {
            try_offer!(self.by_name(kind, name, namespace.is_some(), &range), None);
        }
        if kind == Kind::Pod {
            for (f, equal, v) in q.fields.terms() {
                if f == Field::NodeName && equal {
                    try_offer!(
                        match self.pods_by_node.get(v) {
                            Some(ids) => Source::Lists(vec![restrict(ids, range.start, range.end)]),
                            None => Source::Empty,
                        },
                        None
                    );
                }
            }
        }
        let index = &self.collection(kind).index;
        for (k, r) in q.labels.requirements().iter().enumerate() {
            let source = match r.op() {
                Op::Equals | Op::In => match index.key(r.key()) {
                    Some(k) => Source::Lists(
                        r.values()
                            .iter()
                            .filter_map(|v| k.values.get(v.as_str()))
                            .map(|ids| restrict(ids, range.start, range.end))
                            .filter(|ids| !ids.is_empty())
                            .collect(),
                    ),
                    None => Source::Empty,
                },
                Op::Exists | Op::GreaterThan | Op::LessThan => match index.key(r.key()) {
                    Some(k) => Source::Lists(vec![restrict(&k.all, range.start, range.end)]),
                    None => Source::Empty,
                },
                Op::NotEquals | Op::NotIn | Op::DoesNotExist => continue,
            };
            // `>`/`<` still compare the value of every candidate with the key.
            let holds = matches!(r.op(), Op::Equals | Op::In | Op::Exists);
            try_offer!(source, holds.then_some(k));
        }
        (best, by)
    }

    /// Candidates for `metadata.name=name` within `range`.
    fn by_name(
        &self,
        kind: Kind,
        name: &str,
        one_namespace: bool,
        range: &Range<u32>,
    ) -> Source<'_> {
        let find = |r: Range<u32>| -> Option<u32> {
            let names = match kind {
                Kind::Node => &self.snap.nodes.name[r.start as usize..r.end as usize],
                Kind::Pod => &self.snap.pods.name[r.start as usize..r.end as usize],
            };
            names
                .binary_search_by(|n| n.as_ref().cmp(name))
                .ok()
                .map(|k| r.start + k as u32)
        };
        if kind == Kind::Node || one_namespace {
            return Source::Ids(find(range.clone()).into_iter().collect());
        }
        // All namespaces: one binary search in each.
        Source::Ids(
            (0..self.namespaces.len())
                .filter_map(|k| find(self.namespace_span(k)))
                .collect(),
        )
    }
}

/// The sorted union of sorted lists: a bitmap over their span when they are
/// dense in it (O(total + span / 64)), else concatenate and sort.
fn union(lists: &[&[u32]]) -> Vec<u32> {
    let total: usize = lists.iter().map(|l| l.len()).sum();
    let lo = lists.iter().filter_map(|l| l.first()).min().copied();
    let hi = lists.iter().filter_map(|l| l.last()).max().copied();
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Vec::new();
    };
    let span = (hi - lo) as usize + 1;
    if total < span / 16 {
        let mut all = lists.concat();
        all.sort_unstable();
        all.dedup();
        return all;
    }
    let mut words = vec![0u64; span.div_ceil(64)];
    for &i in lists.iter().flat_map(|l| l.iter()) {
        let b = (i - lo) as usize;
        words[b / 64] |= 1 << (b % 64);
    }
    let mut out = Vec::with_capacity(total);
    for (w, &word) in words.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            let b = bits.trailing_zeros() as usize;
            out.push(lo + (w * 64 + b) as u32);
            bits &= bits - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::union;

    #[test]
    fn unions_sparse_and_dense() {
        assert_eq!(union(&[]), Vec::<u32>::new());
        assert_eq!(union(&[&[], &[]]), Vec::<u32>::new());
        assert_eq!(union(&[&[5, 900_000], &[7]]), vec![5, 7, 900_000]);
        let a: Vec<u32> = (100..200).step_by(2).collect();
        let b: Vec<u32> = (101..200).step_by(2).collect();
        assert_eq!(union(&[&a, &b, &a]), (100..200).collect::<Vec<u32>>());
    }
}
