"""Traffic freshness: from a gateway event's start to the dashboard message that counts it.

Starts the whole local stack as `rtdash up` does (Kafka, Redis, order service,
the Spark application with the orders, traffic and alert queries, push server,
and the idle shop, gateway, provider, notifier) under a temporary home on free
ports. A loader in a process of its own writes believable gateway events
(bench/gateway_events.py) straight into the `gateway` topic at a steady rate,
each with started_at = the moment it is written, and notes after each page view
how many page views it has written. A WebSocket client reads the dashboard's
`traffic.today` messages: a page view's freshness is the arrival of the first
message whose page_views reaches its number, minus its started_at.

In the same run, while the gateway load goes on, signed notifies are posted to
the order service at 200/s and each order's notify-to-dashboard latency is
measured exactly as bench/e2e_latency.py does (its `measure_rate`): the orders
path must stay within its target while the traffic query shares the Spark
application. The Spark application's health endpoint is sampled every half
second for each query's last micro-batch duration.

This is a bench of its own, not an option of bench/e2e_latency.py: that one
measures the orders path alone, with its floor query, and keeps its history
comparable; this one adds the gateway load and a second measurement to it.

Targets (issue 9): traffic p99 <= 2 s at 2,000 events/s; orders p99 <= 1 s at
200 orders/s with the traffic query running.

Usage:
    .venv/bin/python -m bench.traffic_freshness [--rate 2000] [--orders 200] [--seconds 30] [--warmup 20]
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import redis
from rich.console import Console
from rich.table import Table
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

from bench.machine import CpuShares, load_average, machine
from bench.e2e_latency import measure_rate, percentiles
from push_server.tokens import Tokens
from rtdash.channels import TRAFFIC_TODAY, snapshot_key
from rtdash.keys import demo_keys
from rtdash.settings import Settings
from stack.runner import Service, Stack
from stack.services import local_stack
from stack.testing import free_ports

console = Console()
TRAFFIC_TARGET_MS = 2000
ORDERS_TARGET_MS = 1000


def load_gateway(bootstrap: str, topic: str, rate: float, seconds: float, seed: int, out) -> None:
    """The loader process: `rate` events/s for `seconds`; sends [(monotonic time, page views so far)]
    for each page view, and the tallies, through `out` at the end."""
    from confluent_kafka import Producer

    from bench.gateway_events import ShopperLog

    log = ShopperLog(seed=seed)
    # As the gateway's publisher: acks 1, records gathered for up to 50 ms.
    producer = Producer({"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 50})
    marks: list[tuple[float, int]] = []
    sessions = (event for _ in iter(int, 1) for _at, event in log.session(datetime.now(timezone.utc)))
    total = int(rate * seconds)
    start = time.monotonic()
    for n in range(total):
        delay = start + n / rate - time.monotonic()
        if delay > 0.002:
            time.sleep(delay)
        now = datetime.now(timezone.utc)
        stamp = time.monotonic()
        before = log.counts["page_views"]
        key, value = log.record(dataclasses.replace(next(sessions), started_at=now))
        producer.produce(topic, value, key)
        if log.counts["page_views"] > before:
            marks.append((stamp, log.counts["page_views"]))
        if n % 500 == 0:
            producer.poll(0)
    producer.flush(30)
    out.send({"marks": marks, "counts": dict(log.counts), "seconds": time.monotonic() - start})
    out.close()


class Dashboard:
    """A dashboard's WebSocket: every traffic.today message's arrival and page views."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.messages: list[tuple[float, int]] = []
        # Page views shown before the load: the stored snapshot (none before the traffic query's first event).
        client = redis.Redis.from_url(settings.redis)
        try:
            snapshot = client.get(snapshot_key(settings.redis_prefix, TRAFFIC_TODAY))
        finally:
            client.close()
        self.base = json.loads(snapshot)["data"]["page_views"] if snapshot else 0

    async def run(self) -> None:
        port = self.settings.push_port
        token = Tokens.from_settings(self.settings).issue(subject="bench")
        ws = await websocket_connect(HTTPRequest(f"ws://127.0.0.1:{port}/ws?token={token}",
                                                 headers={"Origin": f"http://127.0.0.1:{port}"}))
        try:
            while True:
                message = await ws.read_message()
                if message is None:
                    return
                arrival = time.monotonic()
                envelope = json.loads(message)
                if envelope["channel"] == TRAFFIC_TODAY:
                    self.messages.append((arrival, envelope["data"]["page_views"]))
        finally:
            ws.close()

    def shown(self) -> int:
        return self.messages[-1][1] if self.messages else 0


async def sample_batches(settings: Settings, into: dict[str, list[float]], stop: asyncio.Event) -> None:
    """Each query's last micro-batch duration (ms) from the health endpoint, every half second."""
    client = AsyncHTTPClient()
    url = f"http://127.0.0.1:{settings.jobs_health_port}/healthz"
    seen: dict[str, int] = {}
    while not stop.is_set():
        try:
            health = json.loads((await client.fetch(url, raise_error=False, request_timeout=2)).body)
            for name, q in health.get("queries", {}).items():
                if q.get("last_batch") is not None and seen.get(name) != q["last_batch"]:
                    seen[name] = q["last_batch"]
                    into.setdefault(name, []).append(q["last_batch_ms"])
        except (OSError, ValueError):
            pass
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except asyncio.TimeoutError:
            pass


def freshness(dashboard: Dashboard, marks: list[tuple[float, int]], since: float, until: float) -> list[float]:
    """Per page view written in [since, until]: first message counting it - its start (ms)."""
    latencies, i = [], 0
    messages = dashboard.messages
    for stamp, count in marks:
        while i < len(messages) and messages[i][1] < dashboard.base + count:
            i += 1
        if i == len(messages):
            raise SystemExit(f"the dashboard never showed page view {count} (it shows "
                             f"{dashboard.shown() - dashboard.base})")
        if since <= stamp <= until:
            latencies.append((messages[i][0] - stamp) * 1000)
    return latencies


async def measure(settings: Settings, args, services: list[Service]) -> dict:
    dashboard = Dashboard(settings)
    reader = asyncio.create_task(dashboard.run())
    batches: dict[str, list[float]] = {}
    stop_sampling = asyncio.Event()
    sampler = asyncio.create_task(sample_batches(settings, batches, stop_sampling))

    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    loader = context.Process(target=load_gateway, args=(settings.kafka_servers, settings.gateway_topic, args.rate,
                                                        args.warmup + args.seconds + 15, args.seed, send))
    loader.start()
    console.log(f"gateway load: {args.rate:g} events/s; warm-up {args.warmup:g} s with 20 orders/s")
    if args.warmup:
        await measure_rate(settings, 20, args.warmup)  # not reported
    batches.clear()
    # Where the CPU goes in the measured window: each service, the bench's own load, the rest.
    cpu = CpuShares({"bench: notifies, orders, dashboards (this process)": os.getpid(),
                     "bench: gateway loader": loader.pid,
                     **{service.name: service.process.pid for service in services if service.process}})
    cpu.start()
    since = time.monotonic()
    orders = await measure_rate(settings, args.orders, args.seconds)
    until = time.monotonic()
    cores = cpu.stop()
    stop_sampling.set()
    await sampler
    result = await asyncio.get_running_loop().run_in_executor(None, receive.recv)
    loader.join()
    deadline = time.monotonic() + 60
    while dashboard.shown() < dashboard.base + result["counts"]["page_views"] and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    reader.cancel()
    traffic = percentiles(freshness(dashboard, result["marks"], since, until))
    # The warm-up's page views: the first seconds after the stack reported healthy (cold JVMs).
    first = percentiles(freshness(dashboard, result["marks"], 0, since)) if args.warmup else None
    return {"traffic": traffic, "first": first, "orders": orders, "loader": result, "batches": batches,
            "messages": len(dashboard.messages), "window": until - since, "cores": cores}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=2000, help="gateway events/s (default 2000)")
    parser.add_argument("--orders", type=float, default=200, help="paid orders/s measured alongside (default 200)")
    parser.add_argument("--seconds", type=float, default=30, help="measured seconds (default 30)")
    parser.add_argument("--warmup", type=float, default=20, help="seconds of load before measuring (default 20)")
    parser.add_argument("--mode", choices=("realtime", "microbatch"), default=None,
                        help="RTDASH_ORDERS_MODE for this run (default: the setting's)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the temporary RTDASH_HOME (logs)")
    args = parser.parse_args()
    load_before = load_average()

    home = Path(tempfile.mkdtemp(prefix="rtdash-bench-freshness-"))
    ports = ("kafka_port", "kafka_controller_port", "redis_port", "order_service_port",
             "order_service_internal_port", "payment_provider_port",
             "sms_gateway_port", "notifier_health_port", "shop_port", "gateway_port", "jobs_health_port",
             "push_port", "orders_realtime_health_port", "orders_applier_port")
    settings = Settings(_env_file=None, home=home, **dict(zip(ports, free_ports(len(ports)))),
                        **({"orders_mode": args.mode} if args.mode else {}))
    demo_keys(settings)
    stack = Stack(settings, local_stack(settings))
    try:
        with console.status("starting the local stack") as status:
            stack.start(on_step=status.update)
        result = asyncio.run(measure(settings, args, stack.services))
    finally:
        with console.status("stopping the local stack"):
            stack.stop()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    load_after = load_average()

    traffic, orders = result["traffic"], result["orders"]
    table = Table(title=f"freshness, ms ({args.seconds:g} s measured; orders mode {settings.orders_mode})")
    for col in ("what", "n", "p50", "p95", "p99", "max"):
        table.add_column(col, justify="right" if col != "what" else "left")
    rows = [(f"gateway page view -> traffic.today, {args.rate:g} events/s", traffic),
            *([(f"the same in the first {args.warmup:g} s after healthy (20 orders/s, not the target's)",
                result["first"])] if result["first"] else []),
            (f"paid order -> orders.today, {args.orders:g} orders/s (same run)", orders)]
    lines = ["| what | n | p50 ms | p95 ms | p99 ms | max ms |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in rows:
        cells = [name, str(r["n"])] + [f"{r[k]:.0f}" for k in ("p50", "p95", "p99", "max")]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    console.print(table)
    batch_lines = []
    for name, values in sorted(result["batches"].items()):
        if values:
            batch_lines.append(f"{name} query: {len(values)} batches seen, last_batch_ms mean "
                               f"{statistics.fmean(values):.0f}, max {max(values):.0f}")
    loader = result["loader"]
    verdict = [
        f"traffic p99 {traffic['p99']:.0f} ms: target <= {TRAFFIC_TARGET_MS} ms: "
        f"{'met' if traffic['p99'] <= TRAFFIC_TARGET_MS else 'missed'}",
        f"orders p99 {orders['p99']:.0f} ms: target <= {ORDERS_TARGET_MS} ms: "
        f"{'met' if orders['p99'] <= ORDERS_TARGET_MS else 'missed'}",
        f"loader: {loader['counts']['requests']:,} events in "
        f"{loader['seconds']:.1f} s ({loader['counts']['requests'] / loader['seconds']:,.0f}/s), "
        f"{result['messages']} traffic.today messages",
        *batch_lines,
        "cores used in the measured window: " + ", ".join(
            f"{name} {cores:.2f}" for name, cores in sorted(result["cores"].items(), key=lambda kv: -kv[1])
            if cores >= 0.005) + f"; {sum(result['cores'].values()):.2f} of {os.cpu_count()} in all",
        f"load average {load_before} before, {load_after} after",
    ]
    for line in verdict:
        console.print(line)
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "traffic_freshness.md").write_text(
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}; orders mode {settings.orders_mode}; "
        f"{args.warmup:g} s warm-up, "
        f"{args.seconds:g} s measured.\n\n" + "\n".join(lines) + "\n\n"
        + "\n".join(f"- {line}" for line in verdict) + "\n")
    console.print(f"written to {out / 'traffic_freshness.md'}")
    ok = traffic["p99"] <= TRAFFIC_TARGET_MS and orders["p99"] <= ORDERS_TARGET_MS
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
