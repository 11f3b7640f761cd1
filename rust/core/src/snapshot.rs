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
