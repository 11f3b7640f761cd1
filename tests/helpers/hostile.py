"""Hostile peers, run as processes of their own so that they never share an event loop (or a
GIL) with the code under test.

    python -m tests.helpers.hostile flood-kubelet CERT KEY BODY_FILE SECONDS
        Serves TLS on a free port of 127.0.0.1 (printed as `port N`). To each request it sends
        one well-formed answer (BODY_FILE) and then tiny pipelined `200 OK` answers as fast as
        it can, until the client closes or SECONDS pass; prints `flood-ended after S` then.

`HostileProcess` starts one and stops it by PID.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.helpers.paths import ROOT

TINY_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


# --- the flooding kubelet ------------------------------------------------------------------------


def _flood_kubelet(cert: str, key: str, body_file: str, seconds: float) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    body = Path(body_file).read_bytes()
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )
    flood = TINY_ANSWER * 400  # ~15 KiB per write: one TLS record
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"port {listener.getsockname()[1]}", flush=True)

    def serve(raw: socket.socket) -> None:
        started = time.monotonic()
        try:
            with ctx.wrap_socket(raw, server_side=True) as conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                started = time.monotonic()
                conn.sendall(answer)
                while time.monotonic() - started < seconds:
                    conn.sendall(flood)
        except OSError:
            pass  # the client closed: what a well-behaved client does
        print(f"flood-ended after {time.monotonic() - started:.2f}", flush=True)

    while True:
        raw, _ = listener.accept()
        threading.Thread(target=serve, args=(raw,), daemon=True).start()


# --- running them --------------------------------------------------------------------------------


class HostileProcess:
    """One hostile process; `lines` holds what it printed so far."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.hostile", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []

    def readline(self, timeout: float = 60.0) -> str:
        """The next line it prints (blocking; fails after `timeout`)."""
        assert self.proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not result or not result[0]:
            raise AssertionError(f"hostile process said nothing within {timeout}s")
        self.lines.append(result[0].strip())
        return self.lines[-1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> HostileProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if argv[0] == "flood-kubelet":
        _flood_kubelet(argv[1], argv[2], argv[3], float(argv[4]))
        return 0
    print(f"unknown command {argv[0]!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
