"""Hostile peers, run as processes of their own so that they never share an event loop (or a
GIL) with the code under test.

    python -m tests.helpers.hostile flood-kubelet CERT KEY BODY_FILE SECONDS
        Serves TLS on a free port of 127.0.0.1 (printed as `port N`). To each request it sends
        one well-formed answer (BODY_FILE) and then tiny pipelined `200 OK` answers as fast as
        it can, until the client closes or SECONDS pass; prints `flood-ended after S` then.

    python -m tests.helpers.hostile attack PORT PLAN_JSON
        Throws `Attack` (as JSON) at the HTTPS server on 127.0.0.1:PORT: prints `started`,
        then, when done, one JSON line of what it saw (`Report`).

`HostileProcess` starts one and stops it by PID.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


# --- the attacker of the HTTPS listener -----------------------------------------------------------


@dataclass
class Attack:
    """What to throw at the listener (counts of connections, bytes, seconds).

    Standing connections, opened over `ramp` seconds and held open for as long as the server
    lets them: `idle` (TLS, never a byte after the handshake), `slow` (TLS, a request head one
    short line every `slow_every`, never ended), `raw` (TCP, never a TLS handshake). And
    `flooders` connections each sending `flood_bytes` of header lines at once and never ending
    the head, then waiting for the server's answer and starting over `flood_pause` later, for
    `duration` (0: at once, which makes it a storm of handshakes as much as a header flood).
    """

    idle: int = 0
    slow: int = 0
    raw: int = 0
    slow_every: float = 0.5
    flooders: int = 0
    flood_bytes: int = 960 << 10
    flood_pause: float = 0.2
    ramp: float = 5.0
    duration: float = 20.0


@dataclass
class Report:
    """What the attacker saw. `held`: seconds each standing connection stayed open (from its
    handshake, or its connect for `raw`) until the server closed it; `open_at_end`: standing
    connections still open when the attack ended."""

    held: dict[str, list[float]] = field(default_factory=dict)
    open_at_end: int = 0
    refused: int = 0  # connections the server refused (reset) before any handshake
    flood_answers: dict[str, int] = field(default_factory=dict)


async def _attack(port: int, plan: Attack) -> Report:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    loop = asyncio.get_running_loop()
    report = Report(held={"idle": [], "slow": [], "raw": []})
    started = loop.time()
    errors = (OSError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError)

    async def until_closed(kind: str, reader: asyncio.StreamReader, since: float) -> None:
        try:
            while await reader.read(65536):
                pass
        except errors:
            pass
        report.held[kind].append(loop.time() - since)

    async def open_tls() -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx), 30)
        except errors:
            report.refused += 1
            return None

    async def standing(kind: str, delay: float) -> None:
        await asyncio.sleep(delay)
        if kind == "raw":
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                report.refused += 1
                return
            await until_closed(kind, reader, loop.time())
            writer.close()
            return
        conn = await open_tls()
        if conn is None:
            return
        reader, writer = conn
        since = loop.time()
        if kind == "idle":
            await until_closed(kind, reader, since)
            writer.close()
            return
        watcher = asyncio.create_task(until_closed(kind, reader, since))
        try:
            writer.write(b"GET /apis HTTP/1.1\r\nHost: x\r\n")
            i = 0
            while not watcher.done():
                await asyncio.sleep(plan.slow_every)
                writer.write(b"X-Slow-%d: %d\r\n" % (i, i))
                i += 1
        except errors:
            pass
        await watcher
        writer.close()

    async def flooder() -> None:
        # A head of flood_bytes that never ends, then a wait for the server's verdict (a
        # refusal, or the deadline), then again on a new connection.
        line = b"X-Flood: " + b"f" * 4000 + b"\r\n"
        while loop.time() - started < plan.duration:
            conn = await open_tls()
            if conn is None:
                await asyncio.sleep(0.1)
                continue
            reader, writer = conn
            status = "closed"
            try:
                writer.write(b"GET /apis HTTP/1.1\r\nHost: x\r\n")
                sent = 0
                while sent < plan.flood_bytes and not reader.at_eof():
                    writer.write(line)
                    sent += len(line)
                    await writer.drain()
                answer = await asyncio.wait_for(reader.read(64), 30)
                if answer.count(b" ") >= 2:
                    status = answer.split(b" ", 2)[1].decode()
            except errors:
                pass
            report.flood_answers[status] = report.flood_answers.get(status, 0) + 1
            writer.close()
            await asyncio.sleep(plan.flood_pause)

    kinds = ["idle"] * plan.idle + ["slow"] * plan.slow + ["raw"] * plan.raw
    count = max(len(kinds), 1)
    # Interleaved, so every kind is spread over the ramp.
    kinds = [kinds[i] for i in sorted(range(len(kinds)), key=lambda i: (i * 7919) % count)]
    stand = [
        asyncio.create_task(standing(kind, plan.ramp * i / count)) for i, kind in enumerate(kinds)
    ]
    floods = [asyncio.create_task(flooder()) for _ in range(plan.flooders)]
    print("started", flush=True)
    await asyncio.wait([*stand, *floods], timeout=plan.duration)
    report.open_at_end = sum(1 for t in stand if not t.done())
    pending = [t for t in (*stand, *floods) if not t.done()]
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return report


# --- running them --------------------------------------------------------------------------------


def attack_args(port: int, plan: Attack) -> list[str]:
    return ["attack", str(port), json.dumps(dataclasses.asdict(plan))]


def parse_report(line: str) -> Report:
    data: dict[str, Any] = json.loads(line)
    return Report(**data)


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
    if argv[0] == "attack":
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        report = asyncio.run(_attack(int(argv[1]), Attack(**json.loads(argv[2]))))
        print(json.dumps(dataclasses.asdict(report)), flush=True)
        return 0
    print(f"unknown command {argv[0]!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
