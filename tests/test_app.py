"""The wiring's own pieces: the self-signed serving pair, and the per-tick snapshot keeper."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from kubemetrics import _native
from kubemetrics.app import (
    CycleObserver,
    SnapshotKeeper,
    StartupError,
    ensure_self_signed,
    generate_self_signed,
)
from kubemetrics.config import ServingConfig
from kubemetrics.selfmetrics import SelfMetrics


def _verify(child: x509.Certificate, issuer: x509.Certificate) -> None:
    key = issuer.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    assert child.signature_hash_algorithm is not None
    key.verify(
        child.signature,
        child.tbs_certificate_bytes,
        padding.PKCS1v15(),
        child.signature_hash_algorithm,
    )


def test_self_signed_chain_is_a_leaf_and_its_ca() -> None:
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    chain, key_pem = generate_self_signed(ips=("127.0.0.1", "::1"), dns=("metrics",), now=now)
    leaf, ca = x509.load_pem_x509_certificates(chain)
    _verify(leaf, ca)
    _verify(ca, ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "metrics"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert leaf.not_valid_before_utc == now - datetime.timedelta(hours=1)
    assert leaf.not_valid_after_utc == now + datetime.timedelta(days=365)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers()  # type: ignore[union-attr]


def test_pair_is_generated_once_then_reused(tmp_path: Path) -> None:
    serving = ServingConfig(cert_dir=str(tmp_path / "certs"), bind_address="127.0.0.7")
    cert, key, created = ensure_self_signed(serving)
    assert created
    assert Path(cert).name == "apiserver.crt" and Path(key).name == "apiserver.key"
    assert Path(key).stat().st_mode & 0o777 == 0o600
    leaf = x509.load_pem_x509_certificates(Path(cert).read_bytes())[0]
    ips = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # a specific bind address is named too, so clients dialing it can verify
    assert ipaddress.ip_address("127.0.0.7") in ips.get_values_for_type(x509.IPAddress)
    before = Path(cert).read_bytes()
    again = ensure_self_signed(serving)
    assert again == (cert, key, False)
    assert Path(cert).read_bytes() == before


def test_unwritable_cert_dir_is_a_startup_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StartupError, match="--cert-dir"):
        ensure_self_signed(ServingConfig(cert_dir=str(blocker / "certs")))


def _payload(ts_ms: int, cpu_s: float) -> bytes:
    return (
        f"node_cpu_usage_seconds_total {cpu_s} {ts_ms}\n"
        f"node_memory_working_set_bytes 1048576 {ts_ms}\n"
        f'container_cpu_usage_seconds_total{{container="c",namespace="ns",pod="p"}} {cpu_s / 2} '
        f"{ts_ms}\n"
        f'container_memory_working_set_bytes{{container="c",namespace="ns",pod="p"}} 4096 {ts_ms}\n'
        f'container_start_time_seconds{{container="c",namespace="ns",pod="p"}} 1.7e+09\n'
    ).encode()


def test_keeper_publishes_a_snapshot_and_storage_points_after_each_tick() -> None:
    async def main() -> None:
        store = _native.Store(15.0)
        metrics = SelfMetrics(15.0)
        keeper = SnapshotKeeper(store, metrics)
        observer = CycleObserver(metrics, keeper)
        assert not keeper.current().ready
        now = int(time.time() * 1000)
        store.ingest("n1", _payload(now - 10_000, 100.0), now)
        store.ingest("n1", _payload(now, 101.0), now)
        observer.on_tick(0.01)
        await keeper.wait_idle()
        snap = keeper.current()
        assert snap.ready
        assert snap.node_index("n1") == 0
        assert int(snap.nodes["cpu_nanocores"][0]) == 100_000_000  # 1 core-s over 10 s
        assert b'metrics_server_storage_points{type="node"} 1' in metrics.render()
        assert b'metrics_server_storage_points{type="container"} 1' in metrics.render()
        assert b"metrics_server_manager_tick_duration_seconds_count 1" in metrics.render()

    asyncio.run(main())


class _SlowStore:
    """A Store whose snapshot() blocks (in the worker thread) until released."""

    def __init__(self) -> None:
        self.inner = _native.Store(15.0)
        self.release = threading.Event()
        self.entered = threading.Event()
        self.running = 0
        self.max_running = 0
        self.calls = 0

    def snapshot(self, now_ms: int) -> _native.Snapshot:
        self.calls += 1
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        self.entered.set()
        self.release.wait(10)
        self.running -= 1
        return self.inner.snapshot(now_ms)

    def points(self) -> tuple[int, int]:
        return self.inner.points()


def test_keeper_refreshes_never_overlap_and_coalesce() -> None:
    async def main() -> None:
        store = _SlowStore()
        store.release.set()  # the constructor's first snapshot
        keeper = SnapshotKeeper(store, SelfMetrics(15.0))  # type: ignore[arg-type]
        store.release.clear()
        store.entered.clear()
        keeper.request_refresh()
        await asyncio.to_thread(store.entered.wait, 10)  # the refresh is inside snapshot()
        for _ in range(4):  # ticks meanwhile: one more refresh after it, not four
            keeper.request_refresh()
        store.release.set()
        await keeper.wait_idle()
        assert keeper.refreshes == 2
        assert store.calls == 1 + 2
        assert store.max_running == 1

    asyncio.run(main())
