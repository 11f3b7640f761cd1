"""Membership of the sharded replicas: one `coordination.k8s.io/v1` Lease per replica.

Each replica holds the Lease named after its pod in its namespace, labelled
`kubemetrics.io/shard-group=GROUP`, renewed every third of `--shard-lease-duration`, and
annotated with where its peers reach it (`POD_IP:port`) and the SHA-256 fingerprint of its
serving certificate, so a peer can pin the TLS connection it sends its credentials over (the
certificates are usually self-signed per pod). Replicas list+watch the group's Leases.

**Liveness is judged on the observer's clock**, as client-go's leader election does: a Lease
is alive while its `renewTime` was seen to change within its `leaseDurationSeconds`. So clock
skew between replicas only matters for a Lease's first sighting, where a `renewTime` already
older than the duration marks it dead (a leftover of a replica killed without a goodbye).
When the API server is unreachable no renewal is seen, every peer ages out, and each replica
is left alone with all the nodes: the degraded mode is upstream's (every replica scrapes every
kubelet), never an unscraped node. On SIGTERM the replica deletes its Lease first, so its peers
take its nodes over at their next cycle instead of after the duration. Leases not renewed for
`GC_DURATIONS` durations are deleted by whichever replica sees it first (with a
resourceVersion precondition, so a Lease renewed meanwhile stays).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kubemetrics.api.status import StatusError
from kubemetrics.config import ShardingConfig
from kubemetrics.kube.client import ApiClient, ApiConnectionError
from kubemetrics.kube.reflector import Reflector, ReflectorSettings
from kubemetrics.logs import StateLog, kv

log = logging.getLogger("kubemetrics.shard")

GROUP_LABEL = "kubemetrics.io/shard-group"
ADDRESS_ANNOTATION = "kubemetrics.io/peer-address"
CERT_ANNOTATION = "kubemetrics.io/serving-cert-sha256"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
# A Lease not renewed for this many of its durations is garbage (its replica is gone).
GC_DURATIONS = 10
RELEASE_TIMEOUT = 2.0  # SIGTERM: the time the goodbye (deleting the Lease) may take


@dataclass(frozen=True)
class Member:
    """A live replica: its name (pod and Lease), where peers reach it, its certificate."""

    name: str
    address: str  # host:port, IPv6 in brackets
    cert_sha256: str  # lowercase hex, no separators


@dataclass(frozen=True)
class Identity:
    """What this replica advertises in its Lease."""

    address: str
    cert_sha256: str


def micro_time(ts: float) -> str:
    """metav1.MicroTime text: RFC 3339 with microseconds, UTC."""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def cert_fingerprint(cert_file: str) -> str:
    """SHA-256 of the DER of the first certificate in a PEM file (what TLS presents)."""
    with open(cert_file) as f:
        pem = f.read()
    end = "-----END CERTIFICATE-----"
    first = pem[: pem.index(end) + len(end)]
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(first)).hexdigest()


def host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@dataclass
class _Seen:
    """One Lease as last seen, and when (on our monotonic clock) it was last seen renewed."""

    name: str
    renew: str  # renewTime as written (compared as text: any change is a renewal)
    duration: float
    member: Member | None  # None: no usable peer address/fingerprint
    resource_version: str
    observed: float


class _LeaseHandler:
    def __init__(self, m: Membership) -> None:
        self._m = m
        self._listed: dict[str, _Seen] = {}

    def begin_list(self) -> None:
        self._listed = {}

    def list_page(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            seen = self._m._see(item)
            if seen is not None:
                self._listed[seen.name] = seen

    def end_list(self) -> None:
        self._m._leases = self._listed
        self._listed = {}

    def on_event(self, event_type: str, obj: dict[str, Any]) -> None:
        if event_type == "DELETED":
            name = (obj.get("metadata") or {}).get("name")
            if isinstance(name, str) and self._m._leases.pop(name, None) is not None:
                log.info("Shard member left", extra=kv(member=name))
            return
        seen = self._m._see(obj)
        if seen is not None:
            self._m._leases[seen.name] = seen


class Membership:
    """This replica's Lease (created, renewed, released) and the live members it sees."""

    def __init__(
        self,
        client: ApiClient,
        settings: ShardingConfig,
        identity: Callable[[], Awaitable[Identity]],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self.me = settings.pod_name
        self.namespace = settings.pod_namespace
        self.group = settings.group
        self.duration = float(settings.lease_duration)
        self._identity = identity
        self._clock = clock
        self._wall = wall
        self._path = LEASES.format(namespace=self.namespace)
        self._leases: dict[str, _Seen] = {}
        self._own: dict[str, Any] | None = None  # our Lease as the API server last returned it
        self._advertised: Identity | None = None
        self._released = False
        self._states = StateLog(log)
        self.renewals = 0
        self.last_renewed: float | None = None  # monotonic time of the last successful write
        self.reflector = Reflector(
            client,
            ReflectorSettings(
                path=self._path,
                name="leases",
                label_selector=f"{GROUP_LABEL}={self.group}",
                page_size=None,
                # A watch that breaks is retried soon: membership news must not wait 30 s.
                backoff_max=max(self.duration / 3, 1.0),
            ),
            _LeaseHandler(self),
        )

    # --- what the others see ----------------------------------------------------------------
    def _see(self, obj: dict[str, Any]) -> _Seen | None:
        meta = obj.get("metadata")
        spec = obj.get("spec")
        if not isinstance(meta, dict) or not isinstance(spec, dict):
            return None
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            return None
        renew = spec.get("renewTime")
        renew_text = renew if isinstance(renew, str) else ""
        duration = spec.get("leaseDurationSeconds")
        dur = float(duration) if isinstance(duration, int) and duration > 0 else self.duration
        now = self._clock()
        old = self._leases.get(name)
        if old is not None and old.renew == renew_text:
            observed = old.observed
        elif old is not None:
            observed = now  # renewed while we watched
        else:
            # First sight: trust renewTime only to call it *older*, never newer, than now.
            written = parse_time(renew)
            age = self._wall() - written if written is not None else dur
            observed = now - min(max(age, 0.0), dur)
        ann = meta.get("annotations") or {}
        address = ann.get(ADDRESS_ANNOTATION) if isinstance(ann, dict) else None
        cert = ann.get(CERT_ANNOTATION) if isinstance(ann, dict) else None
        member = None
        if isinstance(address, str) and address and isinstance(cert, str) and len(cert) == 64:
            member = Member(name, address, cert.lower())
        elif name != self.me:
            self._states.bad(
                f"lease/{name}",
                "unusable",
                "Ignoring a shard Lease without a peer address and certificate fingerprint",
                lease=name,
            )
        rv = str(meta.get("resourceVersion") or "")
        return _Seen(name, renew_text, dur, member, rv, observed)

    def _alive(self, s: _Seen, now: float) -> bool:
        return now - s.observed < s.duration

    def members(self) -> list[Member]:
        """The live members, this replica always among them, sorted by name."""
        now = self._clock()
        out = {
            s.name: s.member
            for s in self._leases.values()
            if s.member is not None and s.name != self.me and self._alive(s, now)
        }
        me = self._advertised or Identity("", "")
        out[self.me] = Member(self.me, me.address, me.cert_sha256)
        return [out[name] for name in sorted(out)]

    def peers(self) -> list[Member]:
        return [m for m in self.members() if m.name != self.me]

    @property
    def has_synced(self) -> bool:
        return self.reflector.has_synced

    async def wait_synced(self) -> None:
        await self.reflector.wait_synced()

    # --- our own Lease --------------------------------------------------------------------
    def _body(self, ident: Identity, now: float) -> dict[str, Any]:
        own = self._own or {}
        meta: dict[str, Any] = {
            "name": self.me,
            "namespace": self.namespace,
            "labels": {GROUP_LABEL: self.group},
            "annotations": {ADDRESS_ANNOTATION: ident.address, CERT_ANNOTATION: ident.cert_sha256},
        }
        rv = (own.get("metadata") or {}).get("resourceVersion")
        if rv:
            meta["resourceVersion"] = rv
        old_spec = own.get("spec") or {}
        spec = {
            "holderIdentity": self.me,
            "leaseDurationSeconds": max(1, round(self.duration)),
            "acquireTime": old_spec.get("acquireTime") or micro_time(now),
            "renewTime": micro_time(now),
            "leaseTransitions": old_spec.get("leaseTransitions", 0),
        }
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": spec,
        }

    async def renew(self) -> bool:
        """Create or renew our Lease once; False (logged once per state) when it failed."""
        if self._released:
            return False
        try:
            ident = await self._identity()
            self._own = await self._write(ident)
            self._advertised = ident
        except StatusError as e:
            how = "forbidden" if e.code in (401, 403) else f"http-{e.code}"
            self._states.bad("own", how, "Cannot renew this replica's shard Lease", err=str(e))
            return False
        except (ApiConnectionError, OSError, ValueError) as e:
            self._states.bad("own", "unreachable", "Cannot renew this replica's shard Lease", err=e)
            return False
        self._states.ok("own", "Renewing this replica's shard Lease again")
        self.renewals += 1
        self.last_renewed = self._clock()
        return True

    async def _write(self, ident: Identity) -> dict[str, Any]:
        path = f"{self._path}/{self.me}"
        for _ in range(3):
            body = self._body(ident, self._wall())
            try:
                if self._own is None:
                    return dict(await self._client.send_json("POST", self._path, body))
                return dict(await self._client.send_json("PUT", path, body))
            except StatusError as e:
                if e.code == 409:
                    # Ours already exists (a restarted container) or moved on (our own update
                    # raced a watch): take the current version and write again.
                    self._own = dict(await self._client.get_json(path))
                elif e.code == 404 and self._own is not None:
                    self._own = None  # deleted under us (garbage-collected): create it again
                else:
                    raise
        raise ApiConnectionError(f"Lease {self.namespace}/{self.me}: still conflicting")

    async def _collect_garbage(self) -> None:
        """Delete the group's Leases not renewed for GC_DURATIONS durations (preconditioned)."""
        now = self._clock()
        for s in list(self._leases.values()):
            if s.name == self.me or now - s.observed < GC_DURATIONS * s.duration:
                continue
            with contextlib.suppress(StatusError, ApiConnectionError):
                await self._client.send_json(
                    "DELETE",
                    f"{self._path}/{s.name}",
                    {"preconditions": {"resourceVersion": s.resource_version}},
                )
                log.info("Deleted an expired shard Lease", extra=kv(lease=s.name))

    async def run(self) -> None:
        """Renew every third of the duration and watch the group, until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.reflector.run(), name="reflector-leases")
            tg.create_task(self._renew_loop(), name="lease-renewal")

    async def _renew_loop(self) -> None:
        period = self.duration / 3
        while not self._released:
            await self.renew()
            await self._collect_garbage()
            await asyncio.sleep(period)

    async def release(self, within: float = RELEASE_TIMEOUT) -> bool:
        """Stop renewing and delete our Lease (SIGTERM): the peers take our nodes at once."""
        self._released = True
        own = self._own
        if own is None:
            return False
        uid = (own.get("metadata") or {}).get("uid")
        try:
            async with asyncio.timeout(within):
                await self._client.send_json(
                    "DELETE",
                    f"{self._path}/{self.me}",
                    {"preconditions": {"uid": uid}} if uid else None,
                    request_timeout=within,
                )
        except (StatusError, ApiConnectionError, TimeoutError) as e:
            log.warning("Could not delete this replica's shard Lease", extra=kv(err=e))
            return False
        log.info("Released this replica's shard Lease", extra=kv(lease=self.me))
        return True
