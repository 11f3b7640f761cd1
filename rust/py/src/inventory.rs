//! `Inventory`: the Python door to `kubemetrics_core::inventory`.
//!
//! Discovery writes to it from the event loop; view builders read it from a
//! worker thread. Writers convert the labels with the GIL held, then drop the
//! GIL before taking the lock, so a reader never waits on the GIL while
//! holding it.

use std::collections::HashMap;

use kubemetrics_core::inventory::{sorted_pairs, Pair, Shared};
use pyo3::prelude::*;

/// Names and labels of the selected nodes and the Running pods.
#[pyclass(module = "kubemetrics._native", name = "Inventory", frozen)]
pub struct Inventory {
    pub(crate) shared: Shared,
}

fn pairs(labels: Option<HashMap<String, String>>) -> Box<[Pair]> {
    sorted_pairs(labels.unwrap_or_default())
}

fn to_dict(labels: &kubemetrics_core::inventory::LabelSet) -> HashMap<String, String> {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[pymethods]
impl Inventory {
    #[new]
    fn new() -> Self {
        Inventory {
            shared: Shared::new(),
        }
    }

    /// Add or update a node and its labels.
    #[pyo3(signature = (name, labels=None))]
    fn set_node(&self, py: Python<'_>, name: &str, labels: Option<HashMap<String, String>>) {
        let labels = pairs(labels);
        py.detach(|| self.shared.write().set_node(name, labels));
    }

    fn delete_node(&self, py: Python<'_>, name: &str) {
        py.detach(|| self.shared.write().delete_node(name));
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
        let labels = pairs(labels);
        py.detach(|| self.shared.write().set_pod(namespace, name, labels));
    }

    fn delete_pod(&self, py: Python<'_>, namespace: &str, name: &str) {
        py.detach(|| self.shared.write().delete_pod(namespace, name));
    }

    fn has_node(&self, py: Python<'_>, name: &str) -> bool {
        py.detach(|| self.shared.read().has_node(name))
    }

    fn has_pod(&self, py: Python<'_>, namespace: &str, name: &str) -> bool {
        py.detach(|| self.shared.read().has_pod(namespace, name))
    }

    /// A node's labels, or None if the node is unknown.
    fn node_labels(&self, py: Python<'_>, name: &str) -> Option<HashMap<String, String>> {
        py.detach(|| self.shared.read().node_labels(name).map(|l| to_dict(l)))
    }

    /// A pod's labels, or None if the pod is unknown.
    fn pod_labels(
        &self,
        py: Python<'_>,
        namespace: &str,
        name: &str,
    ) -> Option<HashMap<String, String>> {
        py.detach(|| {
            self.shared
                .read()
                .pod_labels(namespace, name)
                .map(|l| to_dict(l))
        })
    }

    /// Forget everything (before a full relist of both kinds).
    fn clear(&self, py: Python<'_>) {
        py.detach(|| self.shared.write().clear());
    }

    fn clear_nodes(&self, py: Python<'_>) {
        py.detach(|| self.shared.write().clear_nodes());
    }

    fn clear_pods(&self, py: Python<'_>) {
        py.detach(|| self.shared.write().clear_pods());
    }

    fn node_count(&self, py: Python<'_>) -> usize {
        py.detach(|| self.shared.read().node_count())
    }

    fn pod_count(&self, py: Python<'_>) -> usize {
        py.detach(|| self.shared.read().pod_count())
    }

    /// Distinct label sets held (equal sets are shared).
    fn label_set_count(&self, py: Python<'_>) -> usize {
        py.detach(|| self.shared.read().label_set_count())
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let (nodes, pods) = py.detach(|| {
            let inv = self.shared.read();
            (inv.node_count(), inv.pod_count())
        });
        format!("Inventory(nodes={nodes}, pods={pods})")
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Inventory>()?;
    Ok(())
}
