"""Discovery benchmarks: a 150,000-pod metadata-only list (issue 4, item 2).

The pages are what the API server sends for ``as=PartialObjectMetadataList`` (500 pods each,
with the usual metadata: uid, generateName, labels, an owner reference). The same-run baseline
is ``orjson.loads`` of every page alone: the cost no client can avoid. Our benchmarks add the
discovery handler feeding the real native Inventory (first list, then a relist that reconciles
against what is known) and report their cost relative to that baseline; the goal is a small
fraction on top of decoding (no model objects, one Inventory call per pod).

Names are stable for `make bench-save` / `make bench-compare`.
"""

from __future__ import annotations

import statistics
from functools import lru_cache
from typing import Any

import orjson

from kubemetrics import _native
from kubemetrics.kube import ApiClient, ClusterCredentials, Discovery, DiscoverySettings

PODS = 150_000
PAGE = 500
NAMESPACES = 500

_medians: dict[str, float] = {}


def _item(i: int) -> dict[str, Any]:
    app = f"app-{i // 100}"
    return {
        "metadata": {
            "name": f"{app}-5d8f7b9c-{i:06d}",
            "generateName": f"{app}-5d8f7b9c-",
            "namespace": f"ns-{i % NAMESPACES}",
            "uid": f"3f1c2d4e-aaaa-bbbb-cccc-{i:012d}",
            "resourceVersion": str(1000 + i),
            "creationTimestamp": "2026-11-25T10:00:00Z",
            "labels": {"app": app, "pod-template-hash": "5d8f7b9c", "tier": "backend"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": f"{app}-5d8f7b9c",
                    "uid": "9e8d7c6b-0000-1111-2222-333344445555",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }
    }


@lru_cache(maxsize=1)
def pages() -> tuple[bytes, ...]:
    out = []
    for start in range(0, PODS, PAGE):
        body = {
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": "99"},
            "items": [_item(i) for i in range(start, min(start + PAGE, PODS))],
        }
        out.append(orjson.dumps(body))
    return tuple(out)


def _discovery() -> Discovery:
    # No request is made: only the pod handler is driven, with bytes as the API server sends.
    client = ApiClient(ClusterCredentials(server="http://127.0.0.1:9"))
    return Discovery(client, _native.Inventory(), DiscoverySettings())


def _list(d: Discovery, data: tuple[bytes, ...]) -> None:
    h = d.pod_handler
    h.begin_list()
    for page in data:
        h.list_page(orjson.loads(page)["items"])
    h.end_list()


def _record(benchmark: Any, name: str, baseline: str | None = None) -> None:
    median = float(statistics.median(benchmark.stats.stats.data))
    _medians[name] = median
    benchmark.extra_info["median_ms"] = round(median * 1e3, 3)
    if baseline and baseline in _medians:
        ratio = median / _medians[baseline]
        benchmark.extra_info[f"ratio_vs_{baseline}"] = round(ratio, 2)
        print(f"\n{name}: {median * 1e3:.0f} ms, {ratio:.2f}x {baseline}")
    else:
        print(f"\n{name}: {median * 1e3:.0f} ms")


def test_list_150k_pods_decode_only(benchmark: Any) -> None:
    data = pages()

    def decode() -> int:
        return sum(len(orjson.loads(p)["items"]) for p in data)

    assert benchmark.pedantic(decode, rounds=3, iterations=1) == PODS
    _record(benchmark, "decode_only_150k")


def test_list_150k_pods_into_inventory(benchmark: Any) -> None:
    data = pages()

    def first_list() -> Discovery:
        d = _discovery()
        _list(d, data)
        return d

    d = benchmark.pedantic(first_list, rounds=3, iterations=1)
    assert d.pod_count == PODS
    assert d.inventory.pod_count() == PODS  # type: ignore[attr-defined]
    _record(benchmark, "first_list_150k", "decode_only_150k")


def test_relist_150k_pods_reconciles(benchmark: Any) -> None:
    data = pages()
    d = _discovery()
    _list(d, data)
    # The relist lacks 1% of the pods: they must be removed.
    fewer = tuple(
        orjson.dumps({**(body := orjson.loads(p)), "items": body["items"][5:]}) for p in data
    )
    state = {"first": True}

    def relist() -> None:
        _list(d, fewer if state["first"] else data)
        state["first"] = not state["first"]

    benchmark.pedantic(relist, rounds=4, iterations=1)
    assert d.pod_count == PODS  # even number of rounds: back to the full list
    _record(benchmark, "relist_150k", "decode_only_150k")
