"""Parse a kubeconfig with kubernetes-asyncio's loader and print the result as JSON.

Run as ``python -m kubemetrics.kube._kubeconfig_loader PATH [CONTEXT]`` by
:func:`kubemetrics.kube.client.load_kubeconfig_credentials`. It runs in a short-lived child
process because importing kubernetes-asyncio pulls in its ~800 generated model modules
(~40 MB of RSS that the server would otherwise carry for its whole life). The output holds PEM
contents rather than file names: the loader writes ``*-data`` fields to temporary files that
it deletes when this process exits.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import orjson


def _read(path: object) -> str | None:
    if not isinstance(path, str) or not path:
        return None
    with open(path) as f:
        return f.read()


def _token_path(base: str, name: str) -> str:
    return os.path.normpath(os.path.join(base, name))


async def _load(path: str, context: str | None) -> dict[str, Any]:
    from kubernetes_asyncio.client import Configuration
    from kubernetes_asyncio.config import kube_config

    loader = kube_config._get_kube_config_loader_for_yaml_file(
        path, active_context=context, persist_config=False
    )
    cfg = Configuration()
    await loader.load_and_set(cfg)
    user = loader._user
    token_file: str | None = None
    # A token given as a file (projected service-account tokens) rotates: remember the path
    # so the server re-reads it instead of keeping the first value forever.
    if user is not None and "tokenFile" in user and "token" not in user:
        token_file = _token_path(loader._get_base_path(user.path), str(user["tokenFile"]))
    authorization = cfg.api_key.get("BearerToken") or cfg.api_key.get("authorization")
    expiry = getattr(loader, "exec_plugin_expiry", None)
    return {
        "server": cfg.host,
        "ca_pem": _read(cfg.ssl_ca_cert),
        "cert_pem": _read(cfg.cert_file),
        "key_pem": _read(cfg.key_file),
        "authorization": authorization,
        "token_file": token_file,
        "exec": user is not None and "exec" in user,
        "exec_expiry": expiry.timestamp() if expiry is not None else None,
        "verify_ssl": bool(cfg.verify_ssl),
        "tls_server_name": getattr(cfg, "tls_server_name", None),
    }


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print("usage: _kubeconfig_loader PATH [CONTEXT]", file=sys.stderr)
        return 2
    path = sys.argv[1]
    context = sys.argv[2] if len(sys.argv) == 3 and sys.argv[2] else None
    try:
        result = asyncio.run(_load(path, context))
    except Exception as exc:  # any failure is reported to the parent as text
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(orjson.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
