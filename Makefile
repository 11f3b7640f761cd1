# The project's habits. Every target works on a fresh machine: `make dev` builds
# the virtualenv and the Rust extension on first use.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
VENV_OK := .venv/.installed

.PHONY: dev build demo test test-rust test-py lint fmt bench bench-save bench-compare fuzz fuzz-http clean peers test-real soak

$(VENV_OK): pyproject.toml
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q maturin
	$(PIP) install -q -e '.[test]'
	touch $(VENV_OK)

dev: $(VENV_OK)

# Rebuild the extension after Rust changes (incremental, release mode).
build: $(VENV_OK)
	.venv/bin/maturin develop --release --quiet --skip-install

demo: build
	.venv/bin/kubemetrics demo

test: lint test-rust test-py

test-rust:
	cargo test --workspace --exclude kubemetrics-py --quiet

test-py: build
	$(PY) -m pytest -q

lint: build
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	.venv/bin/ruff check python tests benches
	.venv/bin/ruff format --check python tests benches
	.venv/bin/mypy
	.venv/bin/python -m mypy.stubtest kubemetrics._native

fmt: $(VENV_OK)
	cargo fmt --all
	.venv/bin/ruff format python tests benches
	.venv/bin/ruff check --fix python tests benches

# Benchmarks compare against a baseline measured in the same run (ratios);
# bench-save / bench-compare keep a history for regression runs; the check uses each
# benchmark's best (min) time, the least noisy statistic on a shared machine.
BENCH := $(PY) -m pytest benches -q --benchmark-only --benchmark-columns=min,median,mean,ops,rounds
bench: build
	$(BENCH)

bench-save: build
	$(BENCH) --benchmark-autosave

bench-compare: build
	$(BENCH) --benchmark-compare --benchmark-compare-fail=min:25%

# The real peers (kube-apiserver, kube-controller-manager, kubectl 1.37, etcd, upstream
# metrics-server, helm), built from the pinned Go modules in peers/ into a per-machine cache
# outside the checkout and linked into peers/bin/: the first run on a machine takes a while
# (docs/PERFORMANCE.md), every later one seconds.
peers:
	bash peers/build.sh

# The real-cluster tier (tests/real): etcd + kube-apiserver + kube-controller-manager from
# peers/bin on loopback, the simulator attached, kubectl 1.27-1.37, the HPA, upstream side by
# side. Skips (saying so) when `make peers` has not been run.
test-real: build
	$(PY) -m pytest -q tests/real

fuzz:
	cd rust/fuzz && cargo +nightly fuzz run --fuzz-dir . parse corpus/parse seeds -- -dict=parse.dict -max_total_time=$${FUZZ_SECONDS:-600}

# The chaos soak (tests/soak, tests/helpers/soak.py): 1,000 simulated nodes x 30 pods for
# SOAK_MINUTES (10) through kubelet faults, pod churn and a 60 s API server outage; about 12
# minutes with start-up. Too long for `make test`'s budget: CI runs it after it (.ci/run).
soak: build
	SOAK_MINUTES=$${SOAK_MINUTES:-10} $(PY) -m pytest -q -s tests/soak

# The HTTP surface fuzz (tests/e2e/test_fuzz_http.py) with random instead of the fixed examples
# `make test` runs: FUZZ_HTTP_EXAMPLES per test (default 5000, about 15 minutes).
fuzz-http: build
	FUZZ_HTTP_EXAMPLES=$${FUZZ_HTTP_EXAMPLES:-5000} $(PY) -m pytest -q tests/e2e/test_fuzz_http.py

clean:
	rm -rf .venv target
