"""API-server access and discovery against a fake API server over real TLS.

Covers: kubeconfig and in-cluster credentials (token rotation), Status errors, list+watch with
bookmarks, metadata-only pods, relist on 410 (event and HTTP) and on a dropped watch,
pagination, an API server that goes away and comes back, and the node table (address types,
ports, path annotation, IPv6).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from kubemetrics.api.status import StatusError
from kubemetrics.config import ConfigError
from kubemetrics.kube import (
    ApiClient,
    ClusterCredentials,
    Discovery,
    DiscoverySettings,
    NodeTarget,
    Reflector,
    ReflectorSettings,
    TokenSource,
    load_credentials,
    load_incluster_credentials,
    load_kubeconfig_credentials,
)
from kubemetrics.kube import client as kube_client
from kubemetrics.kube.client import _lines
from kubemetrics.kube.discovery import POD_LIST_ACCEPT, POD_WATCH_ACCEPT, node_target
from tests.helpers.kube import (
    CA,
    FakeApiServer,
    RecordingInventory,
    kubeconfig,
    node,
    pod,
    run,
    until,
)

TOKEN = "s3cret-token"


@contextlib.asynccontextmanager
async def api_server(
    tmp_path: Path, via_kubeconfig: bool = False
) -> AsyncIterator[tuple[FakeApiServer, ClusterCredentials]]:
    ca = CA(tmp_path)
    pair = ca.issue("apiserver")
    server = FakeApiServer(
        ca.server_context(pair), TOKEN, tokens={"good": {"username": "alice", "groups": ["devs"]}}
    )
    await server.start()
    try:
        if via_kubeconfig:  # ~1 s: the loader runs in a child process
            creds = await load_kubeconfig_credentials(
                str(kubeconfig(tmp_path / "kubeconfig", server.url, ca, token=TOKEN))
            )
        else:
            creds = ClusterCredentials(
                server=server.url, ca_pem=ca.cert_pem.decode(), token=TokenSource(f"Bearer {TOKEN}")
            )
        yield server, creds
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def discovery(
    creds: ClusterCredentials, settings: DiscoverySettings | None = None
) -> AsyncIterator[tuple[Discovery, RecordingInventory]]:
    inv = RecordingInventory()
    async with ApiClient(creds) as client:
        d = Discovery(client, inv, settings or DiscoverySettings())
        task = asyncio.create_task(d.run())
        try:
            async with asyncio.timeout(20):
                await d.wait_synced()
            yield d, inv
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def seed(server: FakeApiServer) -> None:
    await server.put(
        "nodes", node("n1", labels={"zone": "a"}, addresses=[("InternalIP", "10.0.0.1")])
    )
    await server.put(
        "nodes", node("n2", labels={"zone": "b"}, addresses=[("Hostname", "n2.local")])
    )
    await server.put("pods", pod("default", "web-1", app="web"))
    await server.put("pods", pod("default", "web-2", app="web"))
    await server.put("pods", pod("kube-system", "dns", k8s_app="dns"))
    await server.put("pods", pod("default", "done", phase="Succeeded"))


# ---------------------------------------------------------------- credentials


def test_kubeconfig_credentials_reach_the_server_over_tls(tmp_path: Path) -> None:
    async def main() -> None:
        async with api_server(tmp_path, via_kubeconfig=True) as (server, creds):
            assert creds.server == server.url
            assert creds.token.current() == f"Bearer {TOKEN}"
            assert creds.ca_pem is not None and "BEGIN CERTIFICATE" in creds.ca_pem
            await server.put("nodes", node("n1"))
            async with ApiClient(creds) as client:
                body = await client.get_json("/api/v1/nodes")
            assert [i["metadata"]["name"] for i in body["items"]] == ["n1"]

    run(main())


def test_errors_carry_http_status_and_status_object(tmp_path: Path) -> None:
    async def main() -> None:
        async with api_server(tmp_path) as (server, creds):
            bad = ClusterCredentials(
                server=creds.server, ca_pem=creds.ca_pem, token=TokenSource("Bearer wrong")
            )
            async with ApiClient(bad) as client:
                with pytest.raises(StatusError) as info:
                    await client.get_json("/api/v1/nodes")
            assert info.value.code == 401
            assert info.value.reason == "Unauthorized"
            assert info.value.status.message == "Unauthorized"  # the body's Status, decoded

            server.fail_lists = 1
            async with ApiClient(creds) as client:
                with pytest.raises(StatusError) as info:
                    await client.get_json("/api/v1/pods")
            assert info.value.code == 500
            assert "etcd is sad" in str(info.value)

    run(main())


def test_server_certificate_from_another_ca_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        async with api_server(tmp_path) as (server, creds):
            other = CA(tmp_path, "other-ca")
            wrong = ClusterCredentials(
                server=server.url, ca_pem=other.cert_pem.decode(), token=creds.token
            )
            async with ApiClient(wrong) as client:
                with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
                    await client.get_json("/api/v1/nodes")

    run(main())


def test_incluster_token_is_reread_when_rotated(tmp_path: Path) -> None:
    async def main() -> None:
        async with api_server(tmp_path) as (server, creds):
            sa = tmp_path / "sa"
            sa.mkdir()
            assert creds.ca_pem is not None
            (sa / "ca.crt").write_text(creds.ca_pem)
            (sa / "token").write_text(TOKEN + "\n")
            env = {
                "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                "KUBERNETES_SERVICE_PORT": str(server.server.port),
            }
            incluster = await load_incluster_credentials(env, str(sa))
            assert incluster.server == server.url
            async with ApiClient(incluster) as client:
                await client.get_json("/api/v1/nodes")
                # The kubelet rotates the projected token; the API server stops accepting the old.
                (sa / "token").write_text("rotated-token")
                server.token = "rotated-token"
                with pytest.raises(StatusError) as info:
                    await client.get_json("/api/v1/nodes")
                assert info.value.code == 401
                # The 401 forced a re-read: the next request carries the new token.
                await client.get_json("/api/v1/nodes")
            assert server.requests[-1][2]["Authorization"] == "Bearer rotated-token"

    run(main())


def test_token_file_is_reread_periodically(tmp_path: Path) -> None:
    async def main() -> None:
        path = tmp_path / "token"
        path.write_text("one")
        now = [0.0]
        src = TokenSource.from_file(str(path), refresh_seconds=60.0)
        src._clock = lambda: now[0]
        assert await src.authorization() == "Bearer one"
        path.write_text("two")
        now[0] = 59.0
        assert await src.authorization() == "Bearer one"  # cached within the minute
        now[0] = 61.0
        assert await src.authorization() == "Bearer two"
        path.unlink()  # mid-rotation: keep the last good value
        now[0] = 200.0
        assert await src.authorization() == "Bearer two"

    run(main())


def test_missing_or_broken_configuration_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match="no --kubeconfig given and not running in a cluster"):
        run(load_credentials(None))
    with pytest.raises(ConfigError, match="no such file"):
        run(load_credentials(str(tmp_path / "nope")))
    bad = tmp_path / "bad"
    bad.write_text("apiVersion: v1\nclusters: []\ncontexts: []\n")
    with pytest.raises(ConfigError, match="cannot load kubeconfig"):
        run(load_credentials(str(bad)))
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(ConfigError, match=r"in-cluster CA .*ca\.crt"):
        run(load_incluster_credentials(env, str(tmp_path)))


# ---------------------------------------------------------------- discovery


def test_discovery_lists_then_follows_the_watch(tmp_path: Path) -> None:
    async def main() -> None:
        async with api_server(tmp_path) as (server, creds):
            await seed(server)
            async with discovery(creds) as (d, inv):
                assert d.has_synced
                assert inv.nodes == {"n1": {"zone": "a"}, "n2": {"zone": "b"}}
                # Only Running pods, labels from the metadata-only view.
                assert inv.pods == {
                    ("default", "web-1"): {"app": "web"},
                    ("default", "web-2"): {"app": "web"},
                    ("kube-system", "dns"): {"k8s_app": "dns"},
                }
                assert d.targets["n1"] == NodeTarget("n1", "10.0.0.1", 10250)
                assert d.targets["n2"] == NodeTarget("n2", "n2.local", 10250)

                # Watch events: add, relabel, leave Running, delete a node.
                await server.put("pods", pod("default", "web-3", app="web"))
                await server.put("pods", pod("default", "web-1", app="web", tier="front"))
                await server.put("pods", pod("default", "web-2", phase="Succeeded", app="web"))
                await server.delete("nodes", "n2")
                await until(
                    lambda: (
                        ("default", "web-3") in inv.pods
                        and ("default", "web-2") not in inv.pods
                        and "n2" not in inv.nodes
                    ),
                    "watch events applied",
                )
                assert inv.pods[("default", "web-1")] == {"app": "web", "tier": "front"}
                # Emitted for the scrape cycle to forget: the store is not discovery's to write.
                assert d.removed.pods == {("default", "web-2")}
                assert d.removed.nodes == {"n2"}
                assert "n2" not in d.targets
                assert d.pod_count == 3

            pod_reqs = [(q, h) for p, q, h in server.requests if p == "/api/v1/pods"]
            lists = [(q, h) for q, h in pod_reqs if "watch" not in q]
            watches = [(q, h) for q, h in pod_reqs if "watch" in q]
            assert lists[0][0]["fieldSelector"] == "status.phase=Running"
            assert lists[0][1]["Accept"] == POD_LIST_ACCEPT
            q, h = watches[0]
            assert h["Accept"] == POD_WATCH_ACCEPT
            assert q["fieldSelector"] == "status.phase=Running"
            assert q["allowWatchBookmarks"] == "true"
            assert 300 <= int(q["timeoutSeconds"]) <= 600
            assert int(q["resourceVersion"]) > 100  # the list's version, not "" or 0

    run(main())


def test_take_removed_drains_and_skips_what_came_back(tmp_path: Path) -> None:
    async def main() -> None:
        async with api_server(tmp_path) as (server, creds):
            await seed(server)
            async with discovery(creds) as (d, inv):
                await server.delete("pods", "web-1", "default")
                await server.delete("pods", "web-2", "default")
                await server.delete("nodes", "n2")
                await until(lambda: len(d.removed.pods) == 2 and d.removed.nodes, "removals")
                # web-2 is recreated under the same name before the cycle looks: its fresh
                # samples must stay.
                await server.put("pods", pod("default", "web-2", app="web"))
                await until(lambda: ("default", "web-2") in inv.pods, "web-2 back")
                taken = d.take_removed()
                assert taken.pods == {("default", "web-1")} and taken.nodes == {"n2"}
                again = d.take_removed()
                assert again.pods == set() and again.nodes == set()

    run(main())


def test_node_selector_and_bookmarks(tmp_path: Path) -> None:
    async def main() -> None:
        async with api_server(tmp_path) as (server, creds):
            await seed(server)
            async with discovery(creds, DiscoverySettings(node_selector="zone=a")) as (d, inv):
                assert set(inv.nodes) == {"n1"}
                await server.bookmark()
                rv = server.rv
                await until(
                    lambda: d.node_reflector.resource_version == str(rv), "bookmark version"
                )
                # A bookmark carries no object: nothing changed in the inventory.
                assert set(inv.nodes) == {"n1"}
            node_lists = [q for p, q, _ in server.requests if p == "/api/v1/nodes"]
            assert all(q["labelSelector"] == "zone=a" for q in node_lists)

    run(main())


@pytest.mark.parametrize("as_http", [False, True], ids=["error-event", "http-410"])
def test_410_gone_relists_and_reconciles(tmp_path: Path, as_http: bool) -> None:
    async def main() -> None:
        async with api_server(tmp_path) as (server, creds):
            await seed(server)
            server.watch_gone_as_http = as_http
            async with discovery(creds) as (d, inv):
                assert d.pod_reflector.lists == 1
                # Deleted while history was compacted away: no watch event will ever say so.
                server.delete_silently("pods", "web-1", "default")
                server.delete_silently("nodes", "n1")
                await server.put("pods", pod("default", "new", app="x"))
                await server.end_watches()  # the watches resume from a now-expired version
                await until(
                    lambda: d.pod_reflector.lists == 2 and d.node_reflector.lists == 2,
                    "relist after 410",
                )
                assert ("default", "web-1") not in inv.pods
                assert ("default", "new") in inv.pods
                assert d.removed.pods == {("default", "web-1")}
                assert set(inv.nodes) == {"n2"} and d.removed.nodes == {"n1"}
                assert d.pod_reflector.last_error is None
            # After a 410 the relist is a consistent read (no resourceVersion=0).
            pod_lists = [
                q for p, q, _ in server.requests if p == "/api/v1/pods" and "watch" not in q
            ]
            assert pod_lists[0]["resourceVersion"] == "0"
            assert "resourceVersion" not in pod_lists[1]

    run(main())


def test_dropped_watch_relists(tmp_path: Path) -> None:
    async def main() -> None:
        async with api_server(tmp_path) as (server, creds):
            await seed(server)
            async with discovery(creds) as (d, inv):
                await until(lambda: server.watching() == 2, "both watches open")
                server.drop_watches()
                await until(lambda: d.pod_reflector.lists >= 2, "relist after a dropped watch")
                await server.put("pods", pod("default", "after", app="x"))
                await until(lambda: ("default", "after") in inv.pods, "watch resumed")

    run(main())


def test_pagination_collects_every_page(tmp_path: Path) -> None:
    async def main() -> None:
        async with api_server(tmp_path) as (server, creds):
            for i in range(7):
                await server.put("pods", pod("ns", f"p{i}"))
            async with discovery(creds, DiscoverySettings(page_size=3)) as (_, inv):
                assert {name for _, name in inv.pods} == {f"p{i}" for i in range(7)}
            pod_lists = [
                q for p, q, _ in server.requests if p == "/api/v1/pods" and "watch" not in q
            ]
            assert [q.get("continue", "") != "" for q in pod_lists] == [False, True, True]
            assert all(q["limit"] == "3" for q in pod_lists)

    run(main())


def test_api_server_down_keeps_state_then_recovers(tmp_path: Path) -> None:
    async def main() -> None:
        async with api_server(tmp_path) as (server, creds):
            await seed(server)
            async with discovery(creds) as (d, inv):
                before = dict(inv.pods)
                await server.stop()
                await until(lambda: d.pod_reflector.last_error is not None, "error noticed")
                # Serving goes on with what we had: nothing was dropped.
                assert inv.pods == before and d.removed.pods == set()
                assert d.has_synced
                # Changes made while we could not see them.
                server.cols["pods"].objects.pop("default/web-2")
                await server.put("pods", pod("default", "web-9", app="web"))
                await server.start()  # same port
                await until(
                    lambda: (
                        ("default", "web-9") in inv.pods and ("default", "web-2") not in inv.pods
                    ),
                    "recovered after the API server returned",
                )
                await until(lambda: d.pod_reflector.last_error is None, "error cleared")
                assert d.removed.pods == {("default", "web-2")}

    run(main())


class _Pages:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def begin_list(self) -> None:
        self.calls.append("begin")

    def list_page(self, items: list[dict[str, Any]]) -> None:
        self.calls.append(f"page:{len(items)}")

    def end_list(self) -> None:
        self.calls.append("end")

    def on_event(self, event_type: str, obj: dict[str, Any]) -> None:
        self.calls.append(event_type)


def test_list_failing_halfway_reconciles_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with api_server(tmp_path) as (server, creds):
            for i in range(4):
                await server.put("pods", pod("ns", f"p{i}"))
            server.fail_lists = 1
            handler = _Pages()
            async with ApiClient(creds) as client:
                r = Reflector(
                    client,
                    ReflectorSettings(path="/api/v1/pods", page_size=2, backoff_initial=0.05),
                    handler,
                )
                task = asyncio.create_task(r.run())
                await until(lambda: r.has_synced, "synced after a failed list")
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # The first attempt failed before any page: no begin/end; the retry is whole.
            assert handler.calls[:4] == ["begin", "page:2", "page:2", "end"]

    run(main())


# ---------------------------------------------------------------- the node table


def test_node_target_follows_address_type_preference() -> None:
    obj = node(
        "n",
        addresses=[("ExternalIP", "1.2.3.4"), ("InternalIP", "10.0.0.7"), ("Hostname", "n.local")],
        port=11250,
    )
    manifest = DiscoverySettings(address_types=("InternalIP", "ExternalIP", "Hostname"))
    assert node_target(obj, manifest) == NodeTarget("n", "10.0.0.7", 10250)
    assert node_target(obj, DiscoverySettings()).host == "n.local"  # code default: Hostname first
    only_ext = DiscoverySettings(address_types=("ExternalIP",))
    assert node_target(obj, only_ext).host == "1.2.3.4"

    status_port = DiscoverySettings(use_node_status_port=True, kubelet_port=1234)
    assert node_target(obj, status_port).port == 11250
    zero = node("z", addresses=[("InternalIP", "10.0.0.8")], port=0)
    assert node_target(zero, status_port).port == 1234  # a zero status port falls back

    none = DiscoverySettings(address_types=("InternalDNS", "ExternalDNS"))
    t = node_target(obj, none)
    assert t.error == "no address matched types [InternalDNS ExternalDNS]"
    assert t.host == ""


def test_node_target_path_annotation_and_ipv6() -> None:
    obj = node("n", addresses=[("InternalIP", "fd00::7")], path="/metrics/resource/v2")
    t = node_target(obj, DiscoverySettings(address_types=("InternalIP",)))
    assert t.path == "/metrics/resource/v2"
    assert t.hostport == "[fd00::7]:10250"
    assert NodeTarget("n", "10.0.0.1", 10250).hostport == "10.0.0.1:10250"
    assert NodeTarget("n", "10.0.0.1", 10250).path == "/metrics/resource"


def test_kubeconfig_token_file_and_client_certificate_data(tmp_path: Path) -> None:
    async def main() -> None:
        async with api_server(tmp_path) as (server, _):
            ca = CA(tmp_path, "client-ca")
            pair = ca.issue("metrics-server", server=False)
            token_file = tmp_path / "projected-token"
            token_file.write_text(TOKEN)
            path = kubeconfig(
                tmp_path / "kc",
                server.url,
                CA(tmp_path, "unused"),  # replaced below by the server's CA file
                **{
                    "tokenFile": str(token_file),
                    "client-certificate-data": base64.b64encode(pair.cert_pem).decode(),
                    "client-key-data": base64.b64encode(pair.key_pem).decode(),
                },
            )
            cfg = orjson.loads(path.read_bytes())
            del cfg["clusters"][0]["cluster"]["certificate-authority-data"]
            cfg["clusters"][0]["cluster"]["certificate-authority"] = str(tmp_path / "test-ca.crt")
            path.write_bytes(orjson.dumps(cfg))
            creds = await load_kubeconfig_credentials(str(path))
            assert creds.cert_pem == pair.cert_pem.decode()
            assert creds.key_pem == pair.key_pem.decode()
            async with ApiClient(creds) as client:
                await client.get_json("/api/v1/nodes")
                # The file rotates; a 401 makes the client read it again.
                token_file.write_text("next")
                server.token = "next"
                with pytest.raises(StatusError):
                    await client.get_json("/api/v1/nodes")
                await client.get_json("/api/v1/nodes")
            assert server.requests[-1][2]["Authorization"] == "Bearer next"

    run(main())


def test_post_json_round_trips_a_review(tmp_path: Path) -> None:
    async def main() -> None:
        async with api_server(tmp_path) as (server, creds), ApiClient(creds) as client:
            path = "/apis/authentication.k8s.io/v1/tokenreviews"
            review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview"}
            good = await client.post_json(path, {**review, "spec": {"token": "good"}})
            bad = await client.post_json(path, {**review, "spec": {"token": "bad"}})
            assert good["status"] == {
                "authenticated": True,
                "user": {"username": "alice", "groups": ["devs"]},
            }
            assert bad["status"] == {"authenticated": False, "error": "invalid bearer token"}
            _, _, headers = server.requests[-1]
            assert headers["Content-Type"] == "application/json"
            assert headers["Authorization"] == f"Bearer {TOKEN}"

    run(main())


# ---------------------------------------------------------------- malformed input


def test_malformed_objects_are_skipped_and_discovery_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Objects the handlers cannot take, in the first list and later in the watch: each is
    skipped and logged, everything else is kept and followed (before, the first one ended
    the discovery task, and with it the process)."""

    async def main() -> None:
        async with api_server(tmp_path) as (server, creds):
            await seed(server)
            await server.put_raw("nodes", "/meta-string", {"kind": "Node", "metadata": "x"})
            await server.put_raw(
                "nodes", "/status-string", {"metadata": {"name": "n9"}, "status": "garbage"}
            )
            await server.put_raw(
                "pods",
                "default/labels-list",
                {
                    "metadata": {"namespace": "default", "name": "odd", "labels": ["a"]},
                    "status": {"phase": "Running"},
                },
            )
            async with discovery(creds) as (d, inv):
                assert set(inv.nodes) == {"n1", "n2"} and set(d.targets) == {"n1", "n2"}
                assert ("default", "odd") not in inv.pods and len(inv.pods) == 3
                await server.put_raw("nodes", "/meta-number", {"metadata": 42})
                await server.put_raw("pods", "x/meta-list", {"metadata": ["x"]})
                await server.put("nodes", node("n4", addresses=[("InternalIP", "10.0.0.4")]))
                await server.put("pods", pod("default", "web-9", app="web"))
                await until(
                    lambda: "n4" in d.targets and ("default", "web-9") in inv.pods,
                    "the watch to go on past the malformed objects",
                )
                assert d.node_reflector.skipped == 3 and d.pod_reflector.skipped >= 1
                assert "n9" not in d.targets and "n9" not in inv.nodes

    with caplog.at_level(logging.WARNING, logger="kubemetrics.kube"):
        run(main())
    skipped = [r for r in caplog.records if r.getMessage() == "Skipping a malformed object"]
    assert skipped  # logged (at most once a minute per reflector, with a count)


def test_watch_lines_are_joined_in_linear_time() -> None:
    """A 32 MiB event arriving in 128-byte chunks: joined once at its end (about a second).
    Concatenating per chunk copies ~4 TB (4 MiB that way took 4 s here, and it grows with the
    square), which no machine finishes in the minute this test allows."""
    line = b'{"type":"ADDED","object":{"pad":"' + b"p" * (32 << 20) + b'"}}'
    stream = line + b"\n" + b'{"type":"BOOKMARK"}\n'

    class Content:
        async def iter_any(self) -> AsyncIterator[bytes]:
            for i in range(0, len(stream), 128):
                if i % (1 << 20) == 0:
                    await asyncio.sleep(0)  # a real stream suspends: the test's timeout can act
                yield stream[i : i + 128]

    class Response:
        content = Content()

    async def main() -> list[bytes]:
        return [x async for x in _lines(Response(), "/watch")]  # type: ignore[arg-type]

    got = run(main(), timeout=60)
    assert got == [line, b'{"type":"BOOKMARK"}']


def test_a_hung_exec_plugin_is_given_up_and_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kubeconfig loader runs an exec credential plugin that never finishes: loading
    fails after the refresh timeout (3 s here) with a clear error, and the plugin's process is
    killed with the loader's (before, the load, and every tick after it, waited for ever)."""
    monkeypatch.setattr(kube_client, "CREDENTIAL_REFRESH_TIMEOUT", 3.0)
    pid_file = tmp_path / "plugin.pid"
    plugin = tmp_path / "plugin.sh"
    plugin.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 300\n")
    plugin.chmod(0o755)
    ca = CA(tmp_path)
    config = kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:1", ca, token=None).read_bytes()
    cfg = orjson.loads(config)
    cfg["users"][0]["user"] = {
        "exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": str(plugin)}
    }
    (tmp_path / "kubeconfig").write_bytes(orjson.dumps(cfg))

    def plugin_alive() -> bool:
        if not pid_file.exists() or not pid_file.read_text().strip():
            return False
        pid = int(pid_file.read_text())
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"

    try:
        with pytest.raises(ConfigError, match=r"no answer within 3s \(a credential plugin"):
            run(load_kubeconfig_credentials(str(tmp_path / "kubeconfig")), timeout=60)
        assert pid_file.exists()  # the plugin did start
        deadline = time.monotonic() + 10
        while plugin_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not plugin_alive()
    finally:
        if pid_file.exists() and pid_file.read_text().strip():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
