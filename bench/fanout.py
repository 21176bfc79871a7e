"""Fan-out: how many messages per second the push server delivers to N WebSocket clients, how fast, at what cost.

In one run, for each number of clients (``--clients``, default 1,000 and
5,000) and each server, in turn:

* ``push``: the real push server (``python -m push_server`` as `rtdash up`
  runs it, its own process on a free port), fed from a fresh redis-server;
* ``naive``: bench/fanout_naive.py, the same Redis feed broadcast with
  ``for client in clients: client.write_message(message)`` (the style the
  push server started from);
* ``before``: the push server of commit ``--before`` (default: the last one
  before the slow-client and fan-out changes), extracted with ``git archive``
  into the run's temporary home and run the same way: before/after in one run.

A fresh server process per point; the load clients are separate processes
(bench/fanout_clients.py, ``--procs`` of them, a few hundred bare asyncio
connections each). A publisher writes ``orders.today`` envelopes into Redis as
the jobs do (jobs/lua/envelope.lua: INCR seq, SET snapshot, PUBLISH) at
``--rate`` per second, each carrying its publish time in ``data.t``. After
``--warmup`` s the clients count for ``--seconds`` s:

* delivered: text messages received by all clients per second;
* latency p50/p99/max: receive time minus publish time of each message; the
  p99 of the window's last quarter alone shows whether latency stays bounded
  (about the whole window's) or grows through the window (well above it);
* CPU per message: the server's user+system CPU time over the window divided
  by the messages delivered;
* KB per connection: the server's RSS with every client connected (idle), and
  at the end of the window, minus its RSS before any client, divided by N.

``--stalled`` adds that many connections that never read (their messages pile
up in the kernel and the server) to each point: the readers' figures show
whether they cost the others anything. Results are printed as a table with
the command, machine and date (for BENCHMARKS.md).

    .venv/bin/python -m bench.fanout [--clients 1000,5000] [--rate 10] [--seconds 20] [--servers push,naive]
"""
from __future__ import annotations

import argparse
import json
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psutil
import redis
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bench.fanout_clients import BUCKET_MS, LoadClients
from bench.machine import load_average, machine
from rtdash.channels import ORDERS_TODAY, live_pattern, stream_keys
from rtdash.settings import Settings
from stack.probes import http_ok
from stack.runner import Service
from stack.services import python_service, redis_service
from stack.testing import free_port

ROOT = Path(__file__).resolve().parents[1]
ENVELOPE_LUA = ROOT / "jobs" / "lua" / "envelope.lua"
PUBLISH_LUA = """
return publish_envelope(stream_keys(1), ARGV[1], ARGV[4], nil, history_bound(ARGV[2], ARGV[3]))
"""
BEFORE = "a240d63"
console = Console()


@dataclass
class Point:
    server: str
    clients: int
    rate: float
    seconds: float = 0.0
    messages: int = 0
    latency: Counter | None = None
    last_part: Counter | None = None   # latency of the window's last quarter (grows when it is unbounded)
    cpu_s: float = 0.0
    base_rss: int = 0
    idle_rss: int = 0
    end_rss: int = 0
    open_at_end: int = 0
    closes: Counter | None = None
    clients_cpu_s: float = 0.0
    idle_share: float = 0.0

    def percentile(self, q: float, histogram: Counter | None = None) -> float:
        histogram = self.latency if histogram is None else histogram
        total, seen = sum(histogram.values()), 0
        for bucket in sorted(histogram):
            seen += histogram[bucket]
            if seen >= q * total:
                return (bucket + 1) * BUCKET_MS
        return float("nan")

    def row(self) -> list[str]:
        rate = self.messages / self.seconds if self.seconds else 0
        per_kb = lambda rss: f"{(rss - self.base_rss) / self.clients / 1024:.1f}"  # noqa: E731
        return [self.server, f"{self.clients:,}", f"{self.rate:g}", f"{self.clients * self.rate:,.0f}",
                f"{rate:,.0f}", f"{self.percentile(0.5):.1f}", f"{self.percentile(0.99):.1f}",
                f"{self.percentile(0.99, self.last_part):.1f}",
                f"{max(self.latency) * BUCKET_MS if self.latency else float('nan'):.0f}",
                f"{self.cpu_s / self.messages * 1e6:.1f}" if self.messages else "-",
                f"{self.cpu_s / self.seconds * 100:.0f}%", f"{self.clients_cpu_s / self.seconds * 100:.0f}%",
                f"{self.idle_share * 100:.0f}%", per_kb(self.idle_rss), per_kb(self.end_rss),
                f"{self.open_at_end:,}", ", ".join(f"{c}: {n}" for c, n in sorted(self.closes.items())) or "-"]


class Publisher(threading.Thread):
    """`rate` envelopes per second on one channel, written as the jobs write them, each with its publish time."""

    def __init__(self, settings: Settings, rate: float, *, legacy: bool = False):
        super().__init__(daemon=True)
        self.store = redis.Redis.from_url(settings.redis)
        self.keys = stream_keys(settings.redis_prefix, ORDERS_TODAY)
        self.bound = (settings.push_history_size, settings.push_history_seconds) \
            if hasattr(settings, "push_history_size") else (300, 600)
        # `legacy`: the envelope of the push server before epochs, {"channel", "seq", "data"} and nothing else
        self.script = self.store.register_script(ENVELOPE_LUA.read_text() + PUBLISH_LUA) \
            if ENVELOPE_LUA.exists() and not legacy else None
        self.rate = rate
        self.count = 0
        self.stopping = threading.Event()

    def publish(self) -> None:
        self.count += 1
        data = json.dumps({"date": "2026-11-30", "count": self.count, "amount_cents": 1999 * self.count,
                           "t": time.time()}, separators=(",", ":"))
        if self.script is not None:
            self.script(keys=self.keys, args=[ORDERS_TODAY, *self.bound, data])
            return
        snapshot, live, seq_key = self.keys[:3]
        seq = self.store.incr(seq_key)
        text = f'{{"channel":"{ORDERS_TODAY}","seq":{seq},"data":{data}}}'
        self.store.pipeline(transaction=False).set(snapshot, text).publish(live, text).execute()

    def run(self) -> None:
        due = time.perf_counter()
        while not self.stopping.is_set():
            self.publish()
            due += 1 / self.rate
            self.stopping.wait(max(0.0, due - time.perf_counter()))   # pacing, not waiting on a condition

    def stop(self) -> None:
        self.stopping.set()
        self.join()
        self.store.close()


def access(settings: Settings) -> str:
    """The /ws path with a token when the push server asks for one (push_server/tokens.py)."""
    try:
        from push_server.tokens import Tokens
    except ImportError:
        return "/ws"
    return "/ws?token=" + Tokens.from_settings(settings).issue(ttl=3600)


def extract(commit: str, into: Path) -> Path:
    """The packages a push server of `commit` needs, from git (the working tree untouched)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", commit, "push_server", "rtdash"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    vendor = ROOT / "push_server" / "static" / "vendor"   # the chart library `make setup` installs (not in git)
    if vendor.is_dir() and (into / "push_server" / "static").is_dir():
        shutil.copytree(vendor, into / "push_server" / "static" / "vendor", dirs_exist_ok=True)
    return into


def server_for(kind: str, settings: Settings, port: int, before: Path | None = None) -> Service:
    settings = settings.model_copy(update={"push_port": port})
    if kind == "push":
        return python_service(settings, "push_server", "push_server", port)
    if kind == "before":
        service = python_service(settings, "push_before", "push_server", port)
        service.argv = [sys.executable, "-c", f"import runpy, sys; sys.path.insert(0, {str(before)!r}); "
                        "runpy.run_module('push_server', run_name='__main__', alter_sys=True)"]
        return service
    return Service("naive", [sys.executable, "-m", "bench.fanout_naive", "--port", str(port), "--redis",
                             settings.redis, "--pattern", live_pattern(settings.redis_prefix)],
                   settings.logs_dir / "naive.log", health=lambda: http_ok(f"http://127.0.0.1:{port}/healthz"),
                   address=f"http://127.0.0.1:{port}", env={"PYTHONPATH": str(ROOT)})


def measure(point: Point, settings: Settings, args: argparse.Namespace, progress: Progress, task) -> Point:
    port = free_port()
    settings = settings.model_copy(update={"redis_prefix": f"fanout-{point.server}-{point.clients}"})  # a fresh feed
    server = server_for(point.server, settings, port, args.before_tree)
    stalled: LoadClients | None = None
    clients: LoadClients | None = None
    try:
        progress.update(task, description=f"{point.server} {point.clients:,}: starting the server")
        server.start_ready()
        proc = psutil.Process(server.process.pid)
        point.base_rss = proc.memory_info().rss
        tokens = point.server == "push" or (point.server == "before"
                                            and (args.before_tree / "push_server" / "tokens.py").exists())
        path = access(settings) if tokens else "/ws"  # the others take any client
        progress.update(task, description=f"{point.server} {point.clients:,}: connecting")
        clients = LoadClients(port, path, point.clients, args.procs)
        connected = clients.ready()
        if connected != point.clients:
            raise RuntimeError(f"{connected} of {point.clients} clients connected")
        if args.stalled:
            stalled = LoadClients(port, path, args.stalled, 1, stalled=True)
            stalled.ready()
        point.idle_rss = proc.memory_info().rss
        publisher = Publisher(settings, point.rate, legacy=point.server == "before")
        publisher.start()
        try:
            progress.update(task, description=f"{point.server} {point.clients:,}: warming up")
            time.sleep(args.warmup)   # load before the window, not waiting on a condition
            loaders = [psutil.Process(p.pid) for p in clients.procs]
            clients.command("start")
            machine0 = psutil.cpu_times()
            cpu0, t0 = sum(proc.cpu_times()[:2]), time.perf_counter()
            loaders0 = sum(sum(p.cpu_times()[:2]) for p in loaders)
            last_part = False
            while (elapsed := time.perf_counter() - t0) < args.seconds:
                if not last_part and elapsed >= 0.75 * args.seconds:
                    clients.command("last part")
                    last_part = True
                progress.update(task, description=f"{point.server} {point.clients:,}: measuring "
                                f"{elapsed:.0f}/{args.seconds:g} s, RSS {proc.memory_info().rss >> 20} MiB")
                time.sleep(0.5)
            reports = clients.command("stop")
            point.cpu_s, point.seconds = sum(proc.cpu_times()[:2]) - cpu0, time.perf_counter() - t0
            point.clients_cpu_s = sum(sum(p.cpu_times()[:2]) for p in loaders) - loaders0
            machine1 = psutil.cpu_times()
            point.idle_share = (machine1.idle - machine0.idle) / (sum(machine1) - sum(machine0))
            point.end_rss = proc.memory_info().rss
        finally:
            publisher.stop()
        point.messages = sum(r["messages"] for r in reports)
        point.latency = sum((Counter({int(k): v for k, v in r["latency"].items()}) for r in reports), Counter())
        point.last_part = sum((Counter({int(k): v for k, v in r["last_part"].items()}) for r in reports), Counter())
        point.closes = sum((Counter(r["closes"]) for r in reports), Counter())
        point.open_at_end = sum(r["open"] for r in reports)
    finally:
        for group in (clients, stalled):
            if group is not None:
                group.close()
        server.stop()
    return point


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1000,5000", help="numbers of clients, comma list (default 1000,5000)")
    parser.add_argument("--rate", type=float, default=10, help="publishes per second (default 10)")
    parser.add_argument("--seconds", type=float, default=20, help="measured seconds per point (default 20)")
    parser.add_argument("--warmup", type=float, default=3, help="unmeasured seconds of load first (default 3)")
    parser.add_argument("--servers", default="push,naive",
                        help="which servers, in order: push, naive, before (default push,naive)")
    parser.add_argument("--before", default=BEFORE, help=f"the commit of the 'before' push server (default {BEFORE})")
    parser.add_argument("--procs", type=int, default=4, help="load client processes (default 4)")
    parser.add_argument("--stalled", type=int, default=0, help="extra connections that never read (default 0)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary RTDASH_HOME (logs)")
    args = parser.parse_args()
    counts = [int(n) for n in args.clients.split(",")]
    servers = args.servers.split(",")
    if not set(servers) <= {"push", "naive", "before"} or not counts or min(counts) < 1 or args.rate <= 0:
        parser.error("--servers takes push, naive, before; --clients positive numbers; --rate > 0")
    load_before = load_average()
    started = datetime.now(timezone.utc)
    home = Path(tempfile.mkdtemp(prefix="rtdash-bench-fanout-"))
    room = max(counts) + args.stalled + 100
    settings = Settings(_env_file=None, home=home, redis_port=free_port(), max_connections=room,
                        push_max_connections=room, push_max_connections_per_address=room,
                        push_token_secret=secrets.token_hex(32), push_stall_seconds=30.0)
    points = [Point(server, n, args.rate) for n in counts for server in servers]
    try:
        args.before_tree = extract(args.before, home / "before") if "before" in servers else None
        with redis_service(settings, persist=False), \
                Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                         TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task("starting", total=len(points))
            for point in points:
                measure(point, settings, args, progress, task)
                progress.advance(task)
                console.print(f"{point.server} {point.clients:,}: {point.messages / point.seconds:,.0f} msg/s, "
                              f"p99 {point.percentile(0.99):.1f} ms")
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    headers = ["server", "clients", "publishes/s", "offered msg/s", "delivered msg/s", "p50 ms", "p99 ms",
               "p99 ms, last quarter", "max ms",
               "server CPU µs/msg", "server CPU",
               "load clients' CPU", "machine idle", "KB/conn idle", "KB/conn loaded", "open at end", "closes"]
    command = " ".join(["python -m bench.fanout", *sys.argv[1:]])
    print("\n| " + " | ".join(headers) + " |\n|" + "---|" * len(headers))
    for point in points:
        print("| " + " | ".join(point.row()) + " |")
    print(f"\n- command: `{command}`{f', plus {args.stalled} connections that never read' if args.stalled else ''}")
    print(f"- machine: {machine()}, Python {platform.python_version()}; 1-minute load average {load_before} "
          "before the run")
    print(f"- date: {started:%Y-%m-%d %H:%M} UTC; {args.seconds:g} s measured per point after {args.warmup:g} s "
          "of load, a fresh server process per point, one Redis for the run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
