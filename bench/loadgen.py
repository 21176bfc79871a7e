"""A small HTTP/1.1 load generator for the benchmarks, run in its own process(es).

Requests are pre-built bytes (see `http_request`), sent over keep-alive
connections with asyncio streams; replies are parsed just enough to check the
status and body (Content-Length or chunked). Two modes:

* closed loop: `connections` clients, each sends its next request as soon as
  the previous reply is in, for `duration` seconds -> the most the server
  sustains at that concurrency, and the latency it gives there;
* open loop: requests are due at a fixed `rate` (request k at start + k/rate)
  and handed to a pool of `connections` keep-alive connections; latency runs
  from the *scheduled* time, not the send time, so a server (or a client) that
  falls behind shows up as latency instead of silently lowering the offered
  load (no coordinated omission).

Both modes can run a `warmup` first (same load, not measured, replies still
checked). Every reply must have `expect_status` and, if set, `expect_body`;
anything else counts as an error, and the result lists the indices of the
requests that succeeded so the caller can check the server's side effects.

The load runs in child processes (`run`), never in the process of the server
under test, so they do not share a GIL: ``python -m bench.loadgen`` is the
child's entry point (spec JSON, requests file, result JSON).

One module of more than 300 lines on purpose: the parent's side and the
child's share the request format, the reply parser and the result shape, and
reading them together is how one checks that the load is what it claims.
"""
from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path


def http_request(method: str, path: str, *, host: str, body: bytes = b"",
                 headers: dict[str, str] | None = None) -> bytes:
    """One complete HTTP/1.1 keep-alive request as bytes."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class LoadSpec:
    host: str
    port: int
    mode: str                              # "closed" or "open"
    duration: float                        # measured seconds (after the warmup)
    connections: int = 16
    rate: float = 0.0                      # open loop: requests per second
    warmup: float = 0.0
    cycle: bool = False                    # reuse the requests when they run out (servers without side effects)
    expect_status: int = 200
    expect_body: str | None = "success"
    timeout: float = 30.0                  # per reply
    drain: float = 30.0                    # open loop: wait this long for replies after the last send
    max_outstanding: int = 0               # open loop: stop offering load when this many requests are due
                                           # but unanswered (the server is overloaded); 0 = never stop
    start_at: float = 0.0                  # wall clock (time.time()) to start at; 0 = now


@dataclass
class LoadResult:
    mode: str
    duration: float                        # measured window, seconds
    offered_rate: float = 0.0              # open loop
    sent: int = 0                          # measured requests sent
    ok: int = 0                            # measured requests with the expected reply
    errors: int = 0                        # measured requests with anything else (incl. timeouts)
    completed_in_window: int = 0           # ok replies that arrived inside the measured window
    latencies_ms: list[float] = field(default_factory=list, repr=False)   # measured ok requests
    ok_indices: list[int] = field(default_factory=list, repr=False)       # every ok request, warmup included
    error_kinds: dict[str, int] = field(default_factory=dict)
    exhausted: bool = False                # closed loop ran out of requests before the end
    max_send_lag_ms: float = 0.0           # open loop: worst delay of the scheduler itself (client-side lag)
    overloaded_at: float = 0.0             # open loop: seconds after the start (warmup included) when
                                           # max_outstanding was reached and the load stopped; 0 = never
    not_offered: int = 0                   # open loop: requests never scheduled because of that
    span: float = 0.0                      # open loop: window start to the last measured reply

    @property
    def throughput(self) -> float:
        """Closed loop: expected replies per second inside the measured window. Open loop: measured
        expected replies per second from the window start to the last of them (an overloaded server
        answers the backlog after the window)."""
        if self.mode == "open":
            return self.ok / self.span if self.span else 0.0
        return self.completed_in_window / self.duration if self.duration else 0.0

    def pct(self, p: float) -> float:
        return percentile(sorted(self.latencies_ms), p)

    @classmethod
    def merge(cls, parts: Sequence[LoadResult]) -> LoadResult:
        first = parts[0]
        out = cls(mode=first.mode, duration=max(p.duration for p in parts),
                  offered_rate=sum(p.offered_rate for p in parts))
        kinds: Counter[str] = Counter()
        for p in parts:
            out.sent += p.sent
            out.ok += p.ok
            out.errors += p.errors
            out.completed_in_window += p.completed_in_window
            out.latencies_ms += p.latencies_ms
            out.ok_indices += p.ok_indices
            kinds.update(p.error_kinds)
            out.exhausted |= p.exhausted
            out.max_send_lag_ms = max(out.max_send_lag_ms, p.max_send_lag_ms)
            out.overloaded_at = min(filter(None, (out.overloaded_at, p.overloaded_at)), default=0.0)
            out.not_offered += p.not_offered
            out.span = max(out.span, p.span)
        out.error_kinds = dict(kinds)
        return out


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (nan when empty)."""
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * p // 100))   # ceil(n * p / 100)
    return ordered[min(len(ordered), int(rank)) - 1]


# --- the child: one event loop, raw streams ---------------------------------------------

class _BadReply(Exception):
    pass


async def _read_reply(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, keep_alive) of one HTTP/1.1 reply."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise _BadReply(f"bad status line {lines[0][:60]!r}")
    status = int(parts[1])
    length, chunked, keep_alive = None, False, parts[0] == b"HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection":
            keep_alive = value.strip().lower() == b"keep-alive"
    if chunked:
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                break
            body += (await reader.readexactly(size + 2))[:-2]
        return status, bytes(body), keep_alive
    if length is None:
        if status in (204, 304) or 100 <= status < 200:
            return status, b"", keep_alive
        return status, await reader.read(), False
    return status, await reader.readexactly(length), keep_alive


class _Runner:
    def __init__(self, spec: LoadSpec, requests: list[bytes], indices: list[int]):
        self.spec = spec
        self.requests = requests
        self.indices = indices             # the caller's index of each request
        self.expect_body = spec.expect_body.encode() if spec.expect_body is not None else None
        self.result = LoadResult(mode=spec.mode, duration=spec.duration,
                                 offered_rate=spec.rate if spec.mode == "open" else 0.0)
        self.kinds: Counter[str] = Counter()
        self.done = 0
        self.last_done = 0.0

    # one request on one connection; returns the connection to keep (or None)
    async def _one(self, conn, k: int, due: float, measured: bool):
        spec = self.spec
        kind = None
        try:
            async with asyncio.timeout(spec.timeout):
                if conn is None:
                    conn = await asyncio.open_connection(spec.host, spec.port)
                reader, writer = conn
                writer.write(self.requests[k])
                status, body, keep_alive = await _read_reply(reader)
            if status != spec.expect_status:
                kind = f"HTTP {status}"
            elif self.expect_body is not None and body != self.expect_body:
                kind = f"body {body[:40]!r}"
            if not keep_alive:
                writer.close()
                conn = None
        except TimeoutError:
            kind = "timeout"
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, _BadReply, ValueError) as exc:
            kind = type(exc).__name__
        if kind is not None and conn is not None:
            conn[1].close()
            conn = None
        now = self.last_done = time.perf_counter()
        self.done += 1
        r = self.result
        if kind is None:
            r.ok_indices.append(self.indices[k])
        if measured:
            r.sent += 1
            if kind is None:
                r.ok += 1
                r.latencies_ms.append((now - due) * 1000)
                r.span = max(r.span, now - self.window_start)
                if now <= self.window_end:
                    r.completed_in_window += 1
            else:
                r.errors += 1
                self.kinds[kind] += 1
        elif kind is not None:
            self.kinds["warmup " + kind] += 1
        return conn

    async def _progress(self) -> None:
        while True:
            print(f"progress {self.done} {time.perf_counter() - self.t0:.2f}", flush=True)
            await asyncio.sleep(0.5)

    async def run(self) -> LoadResult:
        spec = self.spec
        if spec.start_at:
            await asyncio.sleep(max(0.0, spec.start_at - time.time()))
        self.t0 = time.perf_counter()
        self.window_start = self.t0 + spec.warmup
        self.window_end = self.window_start + spec.duration
        ticker = asyncio.create_task(self._progress())
        try:
            if spec.mode == "closed":
                await self._closed()
            elif spec.mode == "open":
                await self._open()
            else:
                raise ValueError(f"unknown mode {spec.mode!r}")
        finally:
            ticker.cancel()
        self.result.error_kinds = dict(self.kinds)
        return self.result

    def _next_index(self) -> int | None:
        k = self.cursor
        if k >= len(self.requests):
            if not self.spec.cycle:
                self.result.exhausted = True
                return None
            k %= len(self.requests)
        self.cursor += 1
        return k

    async def _closed(self) -> None:
        self.cursor = 0

        async def client() -> None:
            conn = None
            while (started := time.perf_counter()) < self.window_end:
                k = self._next_index()
                if k is None:
                    break
                conn = await self._one(conn, k, started, measured=started >= self.window_start)
            if conn is not None:
                conn[1].close()

        await asyncio.gather(*(client() for _ in range(self.spec.connections)))
        if self.result.exhausted:   # ran out before the end: the window is what was measured
            self.result.duration = max(1e-9, min(self.window_end, self.last_done) - self.window_start)

    async def _open(self) -> None:
        spec = self.spec
        total = int(round(spec.rate * (spec.warmup + spec.duration)))
        if total > len(self.requests) and not spec.cycle:
            raise ValueError(f"open loop needs {total} requests, got {len(self.requests)}")
        queue: asyncio.Queue[tuple[int, float, bool] | None] = asyncio.Queue()
        interval = 1.0 / spec.rate

        async def client() -> None:
            conn = None
            while (item := await queue.get()) is not None:
                k, due, measured = item
                conn = await self._one(conn, k, due, measured)
            if conn is not None:
                conn[1].close()

        clients = [asyncio.create_task(client()) for _ in range(spec.connections)]
        n = 0
        while n < total:
            now = time.perf_counter()
            if spec.max_outstanding and n - self.done >= spec.max_outstanding:
                self.result.overloaded_at = now - self.t0
                self.result.not_offered = total - n
                total = n
                break
            while n < total and self.t0 + n * interval <= now:   # everything due by now
                due = self.t0 + n * interval
                if (now - due) * 1000 > self.result.max_send_lag_ms:
                    self.result.max_send_lag_ms = (now - due) * 1000
                queue.put_nowait((n % len(self.requests), due, due >= self.window_start))
                n += 1
            if n < total:
                await asyncio.sleep(max(0.0, self.t0 + n * interval - time.perf_counter()))
        for _ in clients:
            queue.put_nowait(None)
        _, pending = await asyncio.wait(clients, timeout=spec.drain)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        missing = total - self.done      # still queued or in flight when the drain ended
        if missing:
            self.kinds["not answered within drain"] += missing
            self.result.sent += missing
            self.result.errors += missing


def _read_requests(path: Path) -> tuple[list[bytes], list[int]]:
    data = path.read_bytes()
    requests, indices, pos = [], [], 0
    while pos < len(data):
        index, size = struct.unpack_from("<II", data, pos)
        pos += 8
        requests.append(data[pos:pos + size])
        indices.append(index)
        pos += size
    return requests, indices


def _write_requests(path: Path, requests: Sequence[bytes], indices: Sequence[int]) -> None:
    with open(path, "wb") as out:
        for index, req in zip(indices, requests):
            out.write(struct.pack("<II", index, len(req)))
            out.write(req)


def _child_main(argv: list[str]) -> None:
    spec_path, requests_path, result_path = map(Path, argv)
    spec = LoadSpec(**json.loads(spec_path.read_text()))
    requests, indices = _read_requests(requests_path)
    result = asyncio.run(_Runner(spec, requests, indices).run())
    result_path.write_text(json.dumps(asdict(result)))


# --- the parent: split the load over child processes, merge the results -------------------

def run(spec: LoadSpec, requests: Sequence[bytes], *, processes: int = 1,
        on_progress: Callable[[int, float], None] | None = None) -> LoadResult:
    """Run `spec` over `requests` in `processes` child processes and merge their results.

    Child p gets requests p, p+P, p+2P... (indices in the result are positions in
    `requests`), connections/P and rate/P; they start together.
    """
    processes = max(1, min(processes, spec.connections))
    with tempfile.TemporaryDirectory(prefix="rtdash-loadgen-") as tmp:
        tmpdir = Path(tmp)
        start_at = time.time() + 0.3 + 0.1 * processes
        children = []
        for p in range(processes):
            part = dict(asdict(spec), connections=spec.connections // processes
                        + (p < spec.connections % processes), start_at=start_at)
            if spec.mode == "open":
                part["rate"] = spec.rate / processes
            (tmpdir / f"spec{p}.json").write_text(json.dumps(part))
            idx = list(range(p, len(requests), processes))
            _write_requests(tmpdir / f"req{p}.bin", [requests[i] for i in idx], idx)
            children.append(subprocess.Popen(
                [sys.executable, "-m", "bench.loadgen", str(tmpdir / f"spec{p}.json"),
                 str(tmpdir / f"req{p}.bin"), str(tmpdir / f"result{p}.json")],
                stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1],
                env={**os.environ, "PYTHONUNBUFFERED": "1"}))
        try:
            done = [0] * processes
            elapsed = [0.0] * processes
            # Progress lines from every child; one reader per child would need threads, so
            # read them in turn (each child prints every 0.5 s).
            open_children = set(range(processes))
            while open_children:
                for p in sorted(open_children):
                    line = children[p].stdout.readline()
                    if not line:
                        open_children.discard(p)
                        continue
                    if line.startswith("progress "):
                        _, count, secs = line.split()
                        done[p], elapsed[p] = int(count), float(secs)
                        if on_progress is not None:
                            on_progress(sum(done), max(elapsed))
            codes = [c.wait() for c in children]
        finally:
            for c in children:
                if c.poll() is None:
                    c.kill()
                    c.wait()
        if any(codes):
            raise RuntimeError(f"load generator failed (exit codes {codes})")
        parts = [LoadResult(**json.loads((tmpdir / f"result{p}.json").read_text())) for p in range(processes)]
    return LoadResult.merge(parts)


if __name__ == "__main__":
    _child_main(sys.argv[1:])
