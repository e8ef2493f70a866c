"""Load test of `bertonnx serve`: dynamic batching against batches of one, on loopback only.

    python -m bertonnx.benchmarks.load_test [BUNDLE] [--corpus sentences|queries] [--requests 400] [--seconds 20]
                                   [--concurrency 1,8,32]

Method:
    * two servers run side by side on 127.0.0.1, started here as subprocesses
      with the same bundle and threads: one with the defaults (dynamic batching),
      one with --max-batch-tokens 1 --max-wait-ms 0, so every model run holds one
      text: batches of one;
    * each request is one text from a fixed corpus of 256, as an online caller
      sends them: sentences of 4 to 40 words, or search-style queries of 2 to 8;
      clients send back to back over keep-alive connections, each waiting for
      its answer (closed loop);
    * levels are interleaved (batched, one, batched, one, ...) so a drifting,
      shared machine hits both alike; each level is bounded by --requests and
      --seconds, after a warm-up that is not counted;
    * latency is the client's wall time per request; throughput is answered
      requests over the level's wall time. The client shares the machine's cores
      with the server, as a sidecar would;
    * cost is the server process's CPU time (all its threads, from /proc) per
      answered request: unlike wall time, it barely moves when other processes
      share the machine, so it shows batching's gain in efficiency even there;
    * fidelity: every answer is compared with the library's unbatched call on
      the same text, and the largest difference is reported next to the speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
from numpy.typing import NDArray

from bertonnx.benchmarks.machine import describe_machine
from bertonnx.defaults import resolve_bundle
from bertonnx.embedder import Embedder

SERVE = "import typer; from bertonnx.cli.serve import serve; typer.run(serve)"
CORPORA = {"sentences": (4, 40), "queries": (2, 8)}  # words per text, fewest and most
MODES = {"dynamic batching": (), "batches of one": ("--max-batch-tokens", "1", "--max-wait-ms", "0")}
WORDS = (
    "the king queen man woman wise kind rules kingdom people city river music band history great old new "
    "small large account apple fruit company market price every day night morning road house school "
    "teacher student book story letter word sentence language model vector server request answer"
).split()


@dataclass(frozen=True)
class Level:
    """One mode at one concurrency."""

    mode: str
    concurrency: int
    requests: int  # answered with 200
    errors: int  # answered with anything else
    seconds: float
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float  # server CPU time per answered request
    requests_per_batch: float  # mean requests merged into one batch, from the server's /metrics
    max_abs_diff: float  # largest |served - library unbatched| over every answer


def corpus(kind: str, n: int = 256, seed: int = 0) -> list[str]:
    """n texts of CORPORA[kind] words each; the spread of lengths is what makes padding matter."""
    shortest, longest = CORPORA[kind]
    rng = np.random.default_rng(seed)
    lengths = rng.integers(shortest, longest + 1, size=n)
    return [" ".join(rng.choice(WORDS, size=int(k))).capitalize() + "." for k in lengths]


def unbatched(embedder: Embedder, texts: list[str]) -> NDArray[np.float32]:
    """(N, H) what the library gives each text alone: the answers the server must match.

    Cut as /v1/embeddings cuts by default (--long-text sentence-transformers); these texts are short.
    """
    cut = embedder.sentence_transformers_max_length
    return np.stack([embedder.sentences([text], normalize=True, max_length=cut)[0] for text in texts])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Served:
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server, all threads, from /proc (Linux)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def server(bundle: Path, flags: Sequence[str], threads: int | None, log_dir: Path) -> Iterator[Served]:
    """A `bertonnx serve` subprocess on loopback; stopped with SIGTERM, as a supervisor would."""
    port = free_port()
    command = [sys.executable, "-c", SERVE, str(bundle), "--host", "127.0.0.1", "--port", str(port), *flags]
    if threads is not None:
        command += ["--threads", str(threads)]
    log = (log_dir / f"server-{port}.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log.name)
        yield Served(url, process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{Path(log).read_text()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server did not answer /health within {timeout:.0f} s:\n{Path(log).read_text()}")


def batch_counts(url: str) -> tuple[float, float]:
    """(requests batched, batches) so far, from the server's own histogram."""
    text = httpx.get(url + "/metrics", timeout=10).text
    total, count = (re.search(rf"^bertonnx_batch_requests_{name} (\S+)$", text, re.M) for name in ("sum", "count"))
    if total is None or count is None:
        raise RuntimeError(f"{url}/metrics has no bertonnx_batch_requests histogram")
    return float(total.group(1)), float(count.group(1))


class Connection:
    """A keep-alive HTTP/1.1 connection with just enough protocol for this test.

    httpx costs the client about as much CPU per request as the server spends on
    a short text, and a 2-core machine shares it; this costs a small fraction,
    so the figures measure the server.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader = reader
        self.writer = writer
        self.host = host

    @classmethod
    async def open(cls, url: str) -> Connection:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer, f"{host}:{port}")

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
        self.writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        headers = await self.reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", headers)
        if length is None:
            raise RuntimeError(f"the server answered without a Content-Length: {headers[:200]!r}")
        return int(headers.split(b" ", 2)[1]), await self.reader.readexactly(int(length.group(1)))

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def drive(
    url: str, texts: list[str], expected: NDArray[np.float32], concurrency: int, requests: int, seconds: float
) -> tuple[list[float], int, float, float]:
    """Closed-loop clients. Returns (latencies in s, errors, wall seconds, max |served - expected|)."""
    bodies = [json.dumps({"input": text}).encode() for text in texts]
    latencies: list[float] = []
    errors = 0
    worst = 0.0
    issued = 0
    started = time.perf_counter()

    async def client() -> None:
        nonlocal errors, worst, issued
        connection = await Connection.open(url)
        try:
            while issued < requests and time.perf_counter() - started < seconds:
                index = issued % len(texts)
                issued += 1
                sent = time.perf_counter()
                status, answer = await connection.post("/v1/embeddings", bodies[index])
                latencies.append(time.perf_counter() - sent)
                if status != 200:
                    errors += 1
                    continue
                vector = np.asarray(json.loads(answer)["data"][0]["embedding"], dtype=np.float32)
                worst = max(worst, float(np.abs(vector - expected[index]).max()))
        finally:
            await connection.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - started, worst


def run_level(
    mode: str,
    served: Served,
    texts: list[str],
    expected: NDArray[np.float32],
    concurrency: int,
    args: argparse.Namespace,
) -> Level:
    batched_before, cpu_before = batch_counts(served.url), served.cpu_seconds()
    latencies, errors, wall, worst = asyncio.run(
        drive(served.url, texts, expected, concurrency, args.requests, args.seconds)
    )
    batched_after, cpu_after = batch_counts(served.url), served.cpu_seconds()
    batches = batched_after[1] - batched_before[1]
    ms = np.asarray(latencies) * 1000
    answered = len(latencies) - errors
    return Level(
        mode=mode,
        concurrency=concurrency,
        requests=answered,
        errors=errors,
        seconds=round(wall, 2),
        requests_per_second=round(answered / wall, 1),
        p50_ms=round(float(np.percentile(ms, 50)), 1),
        p99_ms=round(float(np.percentile(ms, 99)), 1),
        cpu_ms_per_request=round((cpu_after - cpu_before) * 1000 / max(answered, 1), 2),
        requests_per_batch=round((batched_after[0] - batched_before[0]) / batches, 2) if batches else 0.0,
        max_abs_diff=worst,
    )


def markdown(levels: list[Level]) -> str:
    """The README table: both modes per concurrency, and what batching gains in throughput and in CPU."""
    rows = [
        "| clients | mode | req/s | p50 ms | p99 ms | server CPU ms/req | requests per batch "
        "| gain req/s | gain CPU | max abs diff |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    one = {level.concurrency: level for level in levels if level.mode == "batches of one"}
    for level in sorted(levels, key=lambda lv: (lv.concurrency, lv.mode != "dynamic batching")):
        base = one.get(level.concurrency)
        gains = ["", ""]
        if base is not None and level is not base:
            gains = [
                f"{level.requests_per_second / base.requests_per_second:.2f}x",
                f"{base.cpu_ms_per_request / level.cpu_ms_per_request:.2f}x",
            ]
        rows.append(
            f"| {level.concurrency} | {level.mode} | {level.requests_per_second:.0f} | {level.p50_ms:.1f} "
            f"| {level.p99_ms:.1f} | {level.cpu_ms_per_request:.1f} | {level.requests_per_batch:.1f} "
            f"| {gains[0]} | {gains[1]} | {level.max_abs_diff:.1g} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", nargs="?", type=Path, help="bundle directory; default: all-MiniLM-L6-v2")
    parser.add_argument("--corpus", choices=list(CORPORA), default="sentences", help="what each request sends")
    parser.add_argument("--requests", type=int, default=400, help="requests per level, at most")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per level, at most")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads of each server")
    parser.add_argument("--json", type=Path, default=None, help="also write the levels and the machine here")
    args = parser.parse_args()
    if args.requests < 1 or args.seconds <= 0:
        parser.error("--requests and --seconds must be positive")
    concurrencies = [int(c) for c in args.concurrency.split(",")]

    bundle = resolve_bundle(args.bundle, lambda step: print(step, file=sys.stderr))
    texts = corpus(args.corpus)
    expected = unbatched(Embedder.load(bundle, threads=args.threads), texts)
    levels: list[Level] = []
    with tempfile.TemporaryDirectory() as logs, ExitStack() as stack:
        servers = {
            mode: stack.enter_context(server(bundle, flags, args.threads, Path(logs))) for mode, flags in MODES.items()
        }
        for served in servers.values():  # warm-up: ORT allocations, connection set-up; not counted
            asyncio.run(drive(served.url, texts, expected, 4, 32, 30))
        for concurrency in concurrencies:
            for mode, served in servers.items():
                level = run_level(mode, served, texts, expected, concurrency, args)
                print(json.dumps(asdict(level)), file=sys.stderr)
                levels.append(level)
    machine = describe_machine()
    print(
        f"{args.corpus}: {machine.cpu}, {machine.cores} cores, load average {machine.load_average[0]:.2f}; "
        f"bundle {bundle}"
    )
    print(markdown(levels))
    if args.json is not None:
        report = {"machine": machine.to_dict(), "levels": [asdict(level) for level in levels], "args": vars(args)}
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
