//! String interning for names (nodes, namespaces, pods, containers).
//!
//! The same few thousand names arrive in every scrape. Interning them once
//! lets the store keep one `Arc<str>` per distinct name, share it with every
//! [`crate::snapshot::Snapshot`] by reference count instead of copying, and
//! compare names by pointer on the hot paths.

use std::collections::HashSet;
use std::sync::Arc;

/// Prune no more often than this many distinct names, so small stores never
/// pay for a sweep.
const MIN_PRUNE_AT: usize = 1024;

#[derive(Debug)]
pub struct Interner {
    names: HashSet<Arc<str>>,
    /// Sweep unused names once the set grows to this size.
    prune_at: usize,
}

impl Default for Interner {
    fn default() -> Self {
        Self::new()
    }
}

impl Interner {
    pub fn new() -> Self {
        Interner {
            names: HashSet::new(),
            prune_at: MIN_PRUNE_AT,
        }
    }

    /// The shared `Arc<str>` for `name`, created on first sight.
    pub fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(found) = self.names.get(name) {
            return Arc::clone(found);
        }
        let new: Arc<str> = Arc::from(name);
        self.names.insert(Arc::clone(&new));
        new
    }

    /// Number of distinct names currently held.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Drop names nobody else holds any more (pods that went away). A name
    /// with a strong count of 1 is referenced only by this set, and new
    /// references are only ever made through [`Interner::intern`] (which
    /// needs `&mut self`), so it cannot be resurrected concurrently.
    pub fn prune(&mut self) {
        self.names.retain(|name| Arc::strong_count(name) > 1);
    }

    /// Prune when the set has doubled since the last sweep: amortised O(1)
    /// per interned name, and memory stays proportional to live names.
    pub fn maybe_prune(&mut self) {
        if self.names.len() >= self.prune_at {
            self.prune();
            self.prune_at = (self.names.len() * 2).max(MIN_PRUNE_AT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_name_gives_same_allocation() {
        let mut interner = Interner::new();
        let a = interner.intern("kube-system");
        let b = interner.intern("kube-system");
        let c = interner.intern("default");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(&*a, "kube-system");
        assert_eq!(interner.len(), 2);
    }

    #[test]
    fn prune_drops_only_unreferenced_names() {
        let mut interner = Interner::new();
        let kept = interner.intern("kept");
        drop(interner.intern("gone"));
        interner.prune();
        assert_eq!(interner.len(), 1);
        // The kept name is still the same allocation after the sweep.
        assert!(Arc::ptr_eq(&kept, &interner.intern("kept")));
    }

    #[test]
    fn maybe_prune_sweeps_once_the_set_doubles() {
        let mut interner = Interner::new();
        let held: Vec<Arc<str>> = (0..10)
            .map(|i| interner.intern(&format!("held-{i}")))
            .collect();
        for i in 0..MIN_PRUNE_AT {
            drop(interner.intern(&format!("tmp-{i}")));
        }
        interner.maybe_prune();
        assert_eq!(interner.len(), held.len());
    }
}
