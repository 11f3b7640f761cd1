"""A list of any size is read in pieces, never held or decoded whole (`ListBody`, `Reflector`).

kube-apiserver answers the first list (``resourceVersion=0``, from its watch cache) whole,
whatever ``limit`` says, and so does the simulator. Reading such a body into one buffer and
decoding it at once held ~10 KB of Python objects per pod behind a real API server (pods carry
``managedFields``), and the heap stayed at that size after they were freed (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from kubemetrics import _native
from kubemetrics.kube import (
    ApiClient,
    ClusterCredentials,
    Discovery,
    DiscoverySettings,
    load_kubeconfig_credentials,
)
from kubemetrics.kube.client import LIST_CHUNK, ApiConnectionError
from kubemetrics.kube.discovery import POD_LIST_ACCEPT
from kubemetrics_sim.launch import SimProcess
from tests.helpers.kube import Server, pod, run
from tests.server.kube.test_kube import api_server

NODES, PODS_PER_NODE = 50, 400  # 20,000 pods: a ~8 MB metadata list, sent whole


def test_discovery_never_holds_the_pod_list(sim_factory: Callable[..., SimProcess]) -> None:
    sim = sim_factory(nodes=NODES, pods_per_node=PODS_PER_NODE, refresh_ms=(60_000, 60_000))

    async def go() -> tuple[int, int, int, int]:
        creds = await load_kubeconfig_credentials(sim.kubeconfig())
        async with ApiClient(creds) as client:
            params = {"fieldSelector": "status.phase=Running", "resourceVersion": "0"}
            params["limit"] = "500"
            async with client.stream_list("/api/v1/pods", params, POD_LIST_ACCEPT) as body:
                sizes = [sum(map(len, p)) async for p in body.pieces()]
            body_bytes = sum(sizes)
            d = Discovery(client, _native.Inventory(), DiscoverySettings())
            tracemalloc.start()
            try:
                await d.pod_reflector._list(consistent=False)
                kept, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            return body_bytes, kept, peak, d.pod_count

    body_bytes, kept, peak, pods = run(go())
    assert pods == NODES * PODS_PER_NODE
    # Kept: the pods' names, to reconcile a relist (labels live in the Rust Inventory).
    assert kept / pods < 250, f"{kept / pods:.0f} bytes kept per pod"
    # Held on top while listing: what the client reads ahead, one chunk and the items it
    # completed, decoded (~3 MiB here, whatever the list's size). Reading the body whole held
    # it (8 MB) and its decoded items (~5x that) at once.
    assert peak - kept < min(6 << 20, body_bytes / 2), (peak, kept, body_bytes, LIST_CHUNK)


def test_a_whole_list_comes_in_chunk_sized_pieces(tmp_path: Path) -> None:
    """The handler gets one piece per network chunk, never the whole response."""

    async def go() -> list[int]:
        async with api_server(tmp_path) as (api, creds):
            for i in range(3000):
                await api.put("pods", pod(f"p{i:05d}", "ns", labels={"pad": "x" * 200}))
            async with (
                ApiClient(creds) as client,
                client.stream_list("/api/v1/pods", {}, POD_LIST_ACCEPT) as body,
            ):
                return [len(p) async for p in body.pieces(chunk=64 << 10)]

    counts = run(go())
    assert sum(counts) == 3000
    # ~300 bytes per item: a 64 KiB chunk completes at most a few hundred of them.
    assert len(counts) > 5 and max(counts) < 400, counts


def test_malformed_and_truncated_lists_are_errors(tmp_path: Path) -> None:
    bodies = {
        "trunc": b'{"metadata":{},"items":[{"metadata":{"name":"a"}}',
        "bad": b'{"metadata":{},"items":[{"metadata":{"name":"a"}}}',
        "notlist": b"[1,2]",
    }

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=bodies[request.match_info["k"]], content_type="application/json")

    async def go() -> list[str]:
        app = web.Application()
        app.router.add_get("/{k}", handler)
        srv = Server(app)
        await srv.start()
        out = []
        try:
            async with ApiClient(ClusterCredentials(server=srv.url)) as client:
                for k in bodies:
                    with pytest.raises(ApiConnectionError) as e:
                        async with client.stream_list(f"/{k}") as body:
                            _: list[Any] = [p async for p in body.pieces()]
                    out.append(str(e.value))
        finally:
            await srv.stop()
        return out

    errors = run(go())
    assert "ended before the list did" in errors[0]
    assert "expected ',' or ']'" in errors[1]
    assert "expected an object" in errors[2]
