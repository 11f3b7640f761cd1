"""The test suite, mirroring the code: server/ (python/kubemetrics, by subpackage; native/ is
the Rust core through kubemetrics._native), sim/ (the simulator), e2e/ (processes, real
kubectl), deploy/ (the manifests and the wheel); helpers/ is shared by all of them and by
benches/."""
