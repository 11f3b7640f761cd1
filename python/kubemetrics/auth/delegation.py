"""Where the authentication CAs and front-proxy settings come from, kept current.

Sources, as upstream's delegating authentication options have them:

- the client CA: `--client-ca-file`, else the `client-ca-file` key of ConfigMap
  `kube-system/extension-apiserver-authentication`;
- the front-proxy (request-header) settings: `--requestheader-client-ca-file` with the other
  `--requestheader-*` flags, else the ConfigMap's `requestheader-*` keys (JSON lists).

The ConfigMap is read once at start-up (a failure stops start-up with what to grant, unless
`--authentication-tolerate-lookup-failure`; `--authentication-skip-lookup` never reads it) and then
watched, so a rotated CA takes effect without a restart. Flag-given files are re-read when they
change. Listeners (the serving TLS, which must trust the CAs during the handshake) are told
after every change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from kubemetrics.api.status import StatusError
from kubemetrics.auth.authn import CABundle, RequestHeaderConfig
from kubemetrics.config import AuthnConfig
from kubemetrics.kube.client import ApiClient, ApiConnectionError
from kubemetrics.kube.reflector import Reflector, ReflectorSettings
from kubemetrics.logs import kv

log = logging.getLogger("kubemetrics.auth")

CONFIGMAP_NAMESPACE = "kube-system"
CONFIGMAP_NAME = "extension-apiserver-authentication"
READER_ROLE = "extension-apiserver-authentication-reader"
CONFIGMAP_PATH = f"/api/v1/namespaces/{CONFIGMAP_NAMESPACE}/configmaps"
FILE_POLL_SECONDS = 10.0

GRANT_HINT = (
    f"Usually fixed by 'kubectl create rolebinding -n {CONFIGMAP_NAMESPACE} ROLEBINDING_NAME "
    f"--role={READER_ROLE} --serviceaccount=YOUR_NS:YOUR_SA'"
)


class AuthConfigError(Exception):
    """The authentication configuration cannot be loaded; the message says what to do."""


def _json_list(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    raw = data.get(key)
    if not raw:
        return ()
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"{key}: not a JSON list of strings: {e}") from e
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key}: not a JSON list of strings")
    return tuple(value)


def parse_configmap(
    data: Mapping[str, Any],
) -> tuple[CABundle | None, RequestHeaderConfig | None]:
    """(client CA, request-header config) from the ConfigMap's data; ValueError if malformed."""
    where = f"configmap/{CONFIGMAP_NAME}"
    if not isinstance(data, Mapping) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{where}: data is not a map of strings")
    client_ca = None
    if data.get("client-ca-file"):
        client_ca = CABundle.from_pem(str(data["client-ca-file"]), f"{where} client-ca-file")
    rh = None
    if data.get("requestheader-client-ca-file"):
        rh = RequestHeaderConfig(
            ca=CABundle.from_pem(
                str(data["requestheader-client-ca-file"]), f"{where} requestheader-client-ca-file"
            ),
            allowed_names=_json_list(data, "requestheader-allowed-names"),
            username_headers=_json_list(data, "requestheader-username-headers"),
            uid_headers=_json_list(data, "requestheader-uid-headers"),
            group_headers=_json_list(data, "requestheader-group-headers"),
            extra_headers_prefix=_json_list(data, "requestheader-extra-headers-prefix"),
        )
    return client_ca, rh


@dataclass
class _WatchedFile:
    path: str
    stamp: tuple[int, int, int] | None = None  # (mtime_ns, size, inode)


def _stat(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size, st.st_ino


def _read(path: str) -> tuple[tuple[int, int, int], bytes]:
    stamp = _stat(path)
    with open(path, "rb") as f:
        return stamp, f.read()


class DelegatedAuthentication:
    """The current client CA and request-header config, from flags and the ConfigMap."""

    def __init__(
        self,
        config: AuthnConfig,
        client: ApiClient | None,
        *,
        file_poll_seconds: float = FILE_POLL_SECONDS,
    ) -> None:
        self._cfg = config
        self._client = client
        self._poll = file_poll_seconds
        self._client_ca: CABundle | None = None
        self._rh: RequestHeaderConfig | None = None
        self._cm_client_ca: CABundle | None = None
        self._cm_rh: RequestHeaderConfig | None = None
        self._file_client_ca: CABundle | None = None
        self._file_rh: RequestHeaderConfig | None = None
        self._files: dict[str, _WatchedFile] = {}
        if config.client_ca_file:
            self._files["client"] = _WatchedFile(config.client_ca_file)
        if config.requestheader_client_ca_file:
            self._files["requestheader"] = _WatchedFile(config.requestheader_client_ca_file)
        self.listeners: list[Callable[[], None]] = []
        self.reflector: Reflector | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.changes = 0  # applied configuration changes, for tests

    # --- what the authenticators and the TLS layer read ---------------------------------------
    @property
    def uses_configmap(self) -> bool:
        """Whether any part of the configuration comes from the ConfigMap."""
        return not self._cfg.skip_lookup and not (
            self._cfg.client_ca_file and self._cfg.requestheader_client_ca_file
        )

    def client_ca(self) -> CABundle | None:
        return self._client_ca

    def request_header(self) -> RequestHeaderConfig | None:
        return self._rh

    def trusted_pem(self) -> bytes:
        """Every CA a client certificate may chain to (for the TLS handshake)."""
        parts: list[bytes] = []
        if self._client_ca:
            parts.append(self._client_ca.pem)
        if self._rh is not None and self._rh.ca:
            parts.append(self._rh.ca.pem)
        return b"\n".join(p.strip() for p in parts) + (b"\n" if parts else b"")

    # --- start-up ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the files and (unless skipped) the ConfigMap; raise AuthConfigError if that
        fails and is not tolerated. Then keep everything current in the background."""
        for kind, f in self._files.items():
            try:
                f.stamp, pem = await asyncio.to_thread(_read, f.path)
                self._set_file(kind, CABundle.from_pem(pem, f.path))
            except (OSError, ValueError) as e:
                flag = "--client-ca-file" if kind == "client" else "--requestheader-client-ca-file"
                raise AuthConfigError(f"{flag}: cannot load {f.path}: {e}") from e
        if self.uses_configmap:
            await self._lookup()
        self._apply(initial=True)
        if self._files:
            self._tasks.append(asyncio.create_task(self._poll_files(), name="authn-ca-files"))
        if self.uses_configmap and self._client is not None:
            self.reflector = Reflector(
                self._client,
                ReflectorSettings(
                    path=CONFIGMAP_PATH,
                    name=f"configmap/{CONFIGMAP_NAME}",
                    field_selector=f"metadata.name={CONFIGMAP_NAME}",
                    page_size=None,
                ),
                _ConfigMapHandler(self._on_configmap),
            )
            self._tasks.append(asyncio.create_task(self.reflector.run(), name="authn-configmap"))

    async def _lookup(self) -> None:
        cfg = self._cfg
        if self._client is None:
            if not cfg.client_ca_file:
                log.warning(
                    "No authentication-kubeconfig to look up client-ca-file in configmap/%s in "
                    "%s, so client certificate authentication won't work",
                    CONFIGMAP_NAME,
                    CONFIGMAP_NAMESPACE,
                )
            return
        path = f"{CONFIGMAP_PATH}/{CONFIGMAP_NAME}"
        try:
            obj = await self._client.get_json(path, request_timeout=30.0)
            self._take_configmap(obj.get("data") or {} if isinstance(obj, dict) else {})
        except StatusError as e:
            if e.code == 404:
                log.warning(
                    "configmap/%s in %s not found: client certificate and front-proxy "
                    "authentication stay off until it exists",
                    CONFIGMAP_NAME,
                    CONFIGMAP_NAMESPACE,
                )
                return
            hint = ""
            if e.code == 403:
                hint = (
                    f"Unable to get configmap/{CONFIGMAP_NAME} in {CONFIGMAP_NAMESPACE}. "
                    f"{GRANT_HINT}. "
                )
            self._lookup_failed(f"{hint}{e}")
        except (ApiConnectionError, ValueError) as e:
            self._lookup_failed(str(e))

    def _lookup_failed(self, detail: str) -> None:
        if not self._cfg.tolerate_lookup_failure:
            raise AuthConfigError(
                f"unable to load configmap based request-header-client-ca-file: {detail} "
                "(set --authentication-tolerate-lookup-failure to start anyway, treating "
                "requests without other credentials as anonymous)"
            )
        log.warning("Error looking up in-cluster authentication configuration: %s", detail)
        log.warning(
            "Continuing without authentication configuration. This may treat all requests as "
            "anonymous. To require the lookup to succeed, set "
            "--authentication-tolerate-lookup-failure=false"
        )

    # --- changes -------------------------------------------------------------------------------
    def _take_configmap(self, data: Mapping[str, Any]) -> None:
        self._cm_client_ca, self._cm_rh = parse_configmap(data)

    def _on_configmap(self, data: Mapping[str, Any] | None) -> None:
        try:
            self._take_configmap(data or {})
        except ValueError as e:
            log.warning(
                "Ignoring an invalid configmap/%s (keeping the last good one): %s",
                CONFIGMAP_NAME,
                e,
            )
            return
        if data is None:
            log.warning(
                "configmap/%s was deleted: client certificate and front-proxy "
                "authentication are off until it is back",
                CONFIGMAP_NAME,
            )
        self._apply()

    def _set_file(self, kind: str, bundle: CABundle) -> None:
        cfg = self._cfg
        if kind == "client":
            self._file_client_ca = bundle
        else:
            self._file_rh = RequestHeaderConfig(
                ca=bundle,
                allowed_names=cfg.requestheader_allowed_names,
                username_headers=cfg.requestheader_username_headers,
                uid_headers=cfg.requestheader_uid_headers,
                group_headers=cfg.requestheader_group_headers,
                extra_headers_prefix=cfg.requestheader_extra_headers_prefix,
            )

    def _apply(self, initial: bool = False) -> None:
        cfg = self._cfg
        lookup = not cfg.skip_lookup
        client_ca = (
            self._file_client_ca if cfg.client_ca_file else (self._cm_client_ca if lookup else None)
        )
        rh = (
            self._file_rh if cfg.requestheader_client_ca_file else (self._cm_rh if lookup else None)
        )
        changed = client_ca != self._client_ca or rh != self._rh
        self._client_ca, self._rh = client_ca, rh
        if not (changed or initial):
            return
        self.changes += 1
        log.info(
            "Authentication configuration %s",
            "loaded" if initial else "changed",
            extra=kv(
                client_ca=_describe(client_ca),
                requestheader_ca=_describe(rh.ca if rh else None),
                requestheader_allowed_names=",".join(rh.allowed_names) if rh else "",
            ),
        )
        if initial:
            if client_ca is None:
                log.warning("No client CA: client certificate authentication won't work")
            if rh is None:
                log.warning("No request-header CA: front-proxy authentication won't work")
            return
        for listener in self.listeners:
            try:
                listener()
            except Exception:
                log.exception("An authentication configuration listener failed")

    async def _poll_files(self) -> None:
        while True:
            await asyncio.sleep(self._poll)
            for kind, f in self._files.items():
                try:
                    stamp = await asyncio.to_thread(_stat, f.path)
                    if stamp == f.stamp:
                        continue
                    f.stamp, pem = await asyncio.to_thread(_read, f.path)
                    self._set_file(kind, CABundle.from_pem(pem, f.path))
                except (OSError, ValueError) as e:
                    log.warning("Keeping the previous CA from %s: %s", f.path, e)
                    continue
                self._apply()

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()


def _describe(ca: CABundle | None) -> str:
    if ca is None:
        return "none"
    subjects = [c.subject.rfc4514_string() for c in ca.certs]
    return f"{ca.source}: {'; '.join(subjects)}"


class _ConfigMapHandler:
    """Reflector handler for the one ConfigMap: hands its data (None when gone) on."""

    def __init__(self, apply: Callable[[Mapping[str, Any] | None], None]) -> None:
        self._apply = apply
        self._seen: Mapping[str, Any] | None = None
        self._listed = False
        self._last: Mapping[str, Any] | bool | None = False  # False: nothing handed on yet

    def _hand(self, data: Mapping[str, Any] | None) -> None:
        if self._last is not False and data == self._last:
            return
        self._last = data
        self._apply(data)

    def begin_list(self) -> None:
        self._seen = None
        self._listed = False

    def list_page(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            if (item.get("metadata") or {}).get("name") == CONFIGMAP_NAME:
                self._seen = item.get("data") or {}
                self._listed = True

    def end_list(self) -> None:
        self._hand(self._seen if self._listed else None)

    def on_event(self, event_type: str, obj: dict[str, Any]) -> None:
        if (obj.get("metadata") or {}).get("name") != CONFIGMAP_NAME:
            return
        self._hand(None if event_type == "DELETED" else (obj.get("data") or {}))
