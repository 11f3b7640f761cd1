"""Choosing the chunk size responses are written in (`_native.CHUNK_BYTES`).

A full JSON pod list at 5,000 nodes × 30 pods is ~47 MB. Written in chunks of N bytes, it costs
(47 MB / N) × (the per-write cost: a Python `Body.read` that produces the chunk with the GIL
released, aiohttp's `write` and its drain, a TLS record batch and a `send` on the event loop)
plus the bytes themselves; and a slow reader holds one chunk plus the transport's 64 KiB. Two
measurements per size, each in the same run as the others:

- `bench_encode.test_read_chunks`: producing the 150,000-pod JSON list with `Body.read(N)` (the
  binding's and the encoder's share);
- `test_stream_chunks`: the server CPU of an aiohttp TLS server (uvloop, as the server runs)
  writing a 47 MiB body in chunks of N bytes to curl, in its own process (the event loop's share).

`python -m benches.bench_chunks` prints the second table without pytest.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.proc import cpu_seconds

SIZES = [32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10]
BODY_MIB = 47


def _serve(cert: str, key: str, port_file: str) -> None:
    """The aiohttp server process: GET /?chunk=N streams the body in chunks of N bytes."""
    import uvloop
    from aiohttp import web

    body = os.urandom(1 << 20) * BODY_MIB

    async def handler(request: web.Request) -> web.StreamResponse:
        n = int(request.query["chunk"])
        resp = web.StreamResponse()
        resp.content_length = len(body)
        await resp.prepare(request)
        view = memoryview(body)
        for i in range(0, len(body), n):
            await resp.write(bytes(view[i : i + n]))
        await resp.write_eof()
        return resp

    async def main() -> None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        app = web.Application()
        app.router.add_get("/", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        port = str(runner.addresses[0][1])
        await asyncio.to_thread(Path(port_file).write_text, port)
        await asyncio.Event().wait()

    uvloop.run(main())


def stream_cpu(workdir: Path, rounds: int = 10) -> dict[int, dict[str, float]]:
    """Server CPU per response (over `rounds` responses: the clock ticks are 10 ms) and
    curl's median total time, per size."""
    cert, key, port_file = workdir / "cert.pem", workdir / "key.pem", workdir / "port"
    openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    names = ["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        [*openssl, "-keyout", str(key), "-out", str(cert), *names], check=True, capture_output=True
    )
    serve = ["--serve", str(cert), str(key), str(port_file)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "benches.bench_chunks", *serve],
        cwd=Path(__file__).resolve().parents[1],
    )
    out: dict[int, dict[str, float]] = {}
    try:
        for _ in range(600):
            if port_file.exists() and port_file.read_text():
                break
            if proc.poll() is not None:
                raise RuntimeError("chunk server exited")
            time.sleep(0.05)
        port = int(port_file.read_text())
        curl = ["curl", "-sS", "-o", "/dev/null", "-w", "%{time_total}", "--cacert", str(cert)]
        for n in SIZES:
            totals = []
            c0 = cpu_seconds(proc.pid)
            for _ in range(rounds):
                r = subprocess.run(
                    [*curl, f"https://127.0.0.1:{port}/?chunk={n}"],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                totals.append(float(r.stdout))
            out[n] = {
                "server_cpu_ms": round((cpu_seconds(proc.pid) - c0) / rounds * 1000, 1),
                "total_ms": round(statistics.median(totals) * 1000, 1),
                "writes": (BODY_MIB << 20) // n,
            }
    finally:
        proc.terminate()
        proc.wait(10)
    return out


def test_stream_chunks(benchmark: Any, tmp_path: Path) -> None:
    result: dict[int, dict[str, float]] = {}
    benchmark.pedantic(lambda: result.update(stream_cpu(tmp_path)), rounds=1, iterations=1)
    benchmark.extra_info.update({str(k >> 10) + "KiB": v for k, v in result.items()})
    for n, r in result.items():
        cpu, total = r["server_cpu_ms"], r["total_ms"]
        print(f"\n  {n >> 10:4d} KiB chunks: server CPU {cpu} ms, total {total} ms")


pytestmark = pytest.mark.slow


def main() -> int:
    if sys.argv[1:2] == ["--serve"]:
        _serve(*sys.argv[2:5])
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-chunks-") as tmp:
        for n, r in stream_cpu(Path(tmp)).items():
            print(
                f"{n >> 10:4d} KiB chunks ({r['writes']} writes): server CPU "
                f"{r['server_cpu_ms']} ms, curl total {r['total_ms']} ms for {BODY_MIB} MiB"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
