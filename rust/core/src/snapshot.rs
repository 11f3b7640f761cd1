//! The store's output: one consistent, sorted view of every servable node and
//! pod, computed once per scrape cycle and read by the encoders.
//!
//! Columnar on purpose: the encoders walk these vectors straight into response
//! bytes, and the Python door hands them out as numpy arrays without building
//! one Python object per pod.

use std::sync::Arc;

/// Servable node metrics, sorted by `name`. All vectors have equal length.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeMetrics {
    pub name: Vec<Arc<str>>,
    /// CPU usage rate in nanocores, truncated.
    pub cpu_nanocores: Vec<u64>,
    /// Memory working set in bytes, truncated.
    pub memory_bytes: Vec<u64>,
    /// Time of the `last` sample, Unix milliseconds.
    pub timestamp_ms: Vec<i64>,
    /// `last.ts - prev.ts`, milliseconds; always > 0.
    pub window_ms: Vec<i64>,
}

/// Servable pod metrics, sorted by (`namespace`, `name`). Pod `i` owns the
/// containers `container_start[i]..container_start[i + 1]` of
/// [`ContainerMetrics`], which are sorted by name within the pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodMetrics {
    pub namespace: Vec<Arc<str>>,
    pub name: Vec<Arc<str>>,
    /// The node whose kubelet reported the pod.
    pub node: Vec<Arc<str>>,
    /// Timestamp and window of the container with the earliest `last` sample.
    pub timestamp_ms: Vec<i64>,
    pub window_ms: Vec<i64>,
    /// Length `pods + 1`; the last entry equals the number of containers.
    pub container_start: Vec<u32>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerMetrics {
    pub name: Vec<Arc<str>>,
    pub cpu_nanocores: Vec<u64>,
    pub memory_bytes: Vec<u64>,
}

/// Everything servable at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub nodes: NodeMetrics,
    pub pods: PodMetrics,
    pub containers: ContainerMetrics,
}

impl PodMetrics {
    pub fn len(&self) -> usize {
        self.name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.name.is_empty()
    }

    /// The container index range of pod `i`.
    pub fn containers_of(&self, i: usize) -> std::ops::Range<usize> {
        self.container_start[i] as usize..self.container_start[i + 1] as usize
    }
}

impl NodeMetrics {
    pub fn len(&self) -> usize {
        self.name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.name.is_empty()
    }
}

impl Snapshot {
    /// Every column has the right length and container ranges are in order and
    /// in bounds, so readers can index without checks failing. The store
    /// always builds consistent snapshots; this turns a bug into an error
    /// instead of a panic.
    pub fn validate(&self) -> Result<(), &'static str> {
        let n = &self.nodes;
        let len = n.name.len();
        if [
            n.cpu_nanocores.len(),
            n.memory_bytes.len(),
            n.timestamp_ms.len(),
            n.window_ms.len(),
        ]
        .iter()
        .any(|&l| l != len)
        {
            return Err("node columns differ in length");
        }
        let p = &self.pods;
        let len = p.name.len();
        if [
            p.namespace.len(),
            p.node.len(),
            p.timestamp_ms.len(),
            p.window_ms.len(),
        ]
        .iter()
        .any(|&l| l != len)
        {
            return Err("pod columns differ in length");
        }
        if p.container_start.len() != len + 1 {
            return Err("container_start is not pods + 1 long");
        }
        let c = &self.containers;
        let clen = c.name.len();
        if c.cpu_nanocores.len() != clen || c.memory_bytes.len() != clen {
            return Err("container columns differ in length");
        }
        if p.container_start.windows(2).any(|w| w[0] > w[1])
            || p.container_start
                .last()
                .is_some_and(|&e| e as usize != clen)
        {
            return Err("container ranges out of order or bounds");
        }
        if len > u32::MAX as usize || self.nodes.len() > u32::MAX as usize {
            return Err("more items than a view can index");
        }
        Ok(())
    }
}
