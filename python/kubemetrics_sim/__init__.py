"""kubemetrics-sim: a simulated Kubernetes control plane and kubelet fleet."""
