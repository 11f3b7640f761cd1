//! `Inventory`: the Python door to `kubemetrics_core::inventory`.
//!
//! Discovery writes to it from the event loop; the encoders read it from
//! whichever thread serves a request, with the GIL released. An `RwLock`
//! inside a frozen pyclass lets both happen; writers drop the GIL before
//! taking the lock so a reader never waits on the GIL while holding it.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use kubemetrics_core::inventory::{Inventory as CoreInventory, LabelSet};
use pyo3::prelude::*;

/// Names and labels of the selected nodes and the Running pods.
#[pyclass(module = "kubemetrics._native", name = "Inventory", frozen)]
pub struct Inventory {
    inner: RwLock<CoreInventory>,
}

impl Inventory {
    /// A panic while holding the lock cannot leave the maps half-updated
    /// (each call is one insert or remove), so a poisoned lock is still usable.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, CoreInventory> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, CoreInventory> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

fn label_set(labels: Option<HashMap<String, String>>) -> LabelSet {
    LabelSet::new(labels.unwrap_or_default())
}

#[pymethods]
impl Inventory {
    #[new]
    fn new() -> Self {
        Inventory {
            inner: RwLock::new(CoreInventory::new()),
        }
    }

    /// Add or update a node and its labels.
    #[pyo3(signature = (name, labels=None))]
    fn set_node(&self, py: Python<'_>, name: &str, labels: Option<HashMap<String, String>>) {
        let labels = label_set(labels);
        py.detach(|| self.write().set_node(name, labels));
    }

    fn delete_node(&self, py: Python<'_>, name: &str) {
        py.detach(|| self.write().delete_node(name));
    }

    /// Add or update a Running pod and its labels.
    #[pyo3(signature = (namespace, name, labels=None))]
    fn set_pod(
        &self,
        py: Python<'_>,
        namespace: &str,
        name: &str,
        labels: Option<HashMap<String, String>>,
    ) {
        let labels = label_set(labels);
        py.detach(|| self.write().set_pod(namespace, name, labels));
    }

    fn delete_pod(&self, py: Python<'_>, namespace: &str, name: &str) {
        py.detach(|| self.write().delete_pod(namespace, name));
    }

    fn has_node(&self, py: Python<'_>, name: &str) -> bool {
        py.detach(|| self.read().has_node(name))
    }

    fn has_pod(&self, py: Python<'_>, namespace: &str, name: &str) -> bool {
        py.detach(|| self.read().has_pod(namespace, name))
    }

    /// A node's labels, or None if the node is unknown.
    fn node_labels(&self, py: Python<'_>, name: &str) -> Option<HashMap<String, String>> {
        py.detach(|| {
            self.read().node_labels(name).map(|l| {
                l.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
        })
    }

    /// A pod's labels, or None if the pod is unknown.
    fn pod_labels(
        &self,
        py: Python<'_>,
        namespace: &str,
        name: &str,
    ) -> Option<HashMap<String, String>> {
        py.detach(|| {
            self.read().pod_labels(namespace, name).map(|l| {
                l.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
        })
    }

    /// Forget everything (before a full relist of both kinds).
    fn clear(&self, py: Python<'_>) {
        py.detach(|| self.write().clear());
    }

    fn clear_nodes(&self, py: Python<'_>) {
        py.detach(|| self.write().clear_nodes());
    }

    fn clear_pods(&self, py: Python<'_>) {
        py.detach(|| self.write().clear_pods());
    }

    fn node_count(&self, py: Python<'_>) -> usize {
        py.detach(|| self.read().node_count())
    }

    fn pod_count(&self, py: Python<'_>) -> usize {
        py.detach(|| self.read().pod_count())
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let (nodes, pods) = py.detach(|| {
            let inv = self.read();
            (inv.node_count(), inv.pod_count())
        });
        format!("Inventory(nodes={nodes}, pods={pods})")
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Inventory>()?;
    Ok(())
}
