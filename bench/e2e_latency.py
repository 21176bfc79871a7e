"""End-to-end latency: from a notify's `success` reply to the dashboard message that counts it.

Starts the whole local stack as `rtdash up` does (real Kafka, Redis, order
service, the Spark application of the traffic and alert queries, with the
micro-batch orders query in it or, in the real-time mode, the real-time orders
application and the orders applier beside it, push server) under a temporary
home on free ports, in the orders mode of --mode, connects a WebSocket client like a
dashboard, and posts signed notifies at a steady rate (the payment simulator
places each order in the order service's internal API first, as the shop does).
Per order, latency = arrival of the first `orders.today` message whose count
includes the order - arrival of the order's `success` reply.

"Includes" is exact, not guessed: the order service commits orders one at a
time in one database thread, the relay publishes the outbox in commit order to
a single partition, and both paths count in offset order; so the k-th order of
the run in commit order (SQLite rowid) is counted by the first message whose
count reaches base + k. No duplicates are sent, so none are dropped.

In the same run, under the same load:

* a loader process writes gateway events at --gateway-rate (2,000/s) for the
  traffic query the whole time, and the traffic.today freshness is measured
  as bench/traffic_freshness does (target p99 <= 2 s);
* the first --cold seconds right after every service reported healthy are
  measured at the full rate and reported on their own (a cold start);
* the seed's direct path (bench/seed_direct.py: callback -> SQLite -> Redis
  PUBLISH -> WebSocket, no Kafka, no Spark) at the same rate, measured the same
  way, so the ratio of the two is known;
* where the time goes, stage by stage, from the Kafka record timestamps: reply
  -> `orders` record (the outbox relay), -> `orders.rows` record (the Spark
  real-time query; real-time mode only), -> the WebSocket message (applier or
  micro-batch, Redis, push server).

Usage:
    .venv/bin/python -m bench.e2e_latency [--mode realtime|microbatch] [--rate 200] [--seconds 30]
        [--cold 10] [--warmup 20] [--gateway-rate 2000] [--batch-seconds S] [--trigger S] [--keep]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import text
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from bench.machine import load_average, machine
from producers.provider.simulator import PaymentSimulator
from push_server.tokens import Tokens
from rtdash.channels import ORDERS_TODAY
from rtdash.database import make_engine
from rtdash.keys import demo_keys, load_private_key
from rtdash.payments import NOTIFY_PATH
from rtdash.settings import Settings
from stack.runner import Service, Stack
from stack.probes import http_ok
from stack.services import local_stack
from stack.testing import free_port, free_ports

console = Console()
TARGET_P99_MS = 100


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]
    return {"n": len(ordered), "p50": pct(50), "p95": pct(95), "p99": pct(99), "max": ordered[-1],
            "mean": statistics.fmean(ordered)}


@dataclass(frozen=True)
class Target:
    """One path from a notify to a dashboard: where notifies go, where the dashboard listens, what counts."""

    notify_url: str | None            # None: the order service's notify path
    orders_url: str | None            # None: the order service's internal API
    ws_url: str
    origin: str
    count: Callable[[dict], int | None]   # the paid-order count a message shows, None for other messages
    database: str                     # SQLAlchemy URL of the path's orders
    committed: str                    # SQL: the order ids in commit order


def rtdash_target(settings: Settings) -> Target:
    token = Tokens.from_settings(settings).issue(subject="bench")
    return Target(None, None, f"ws://127.0.0.1:{settings.push_port}/ws?token={token}",
                  f"http://127.0.0.1:{settings.push_port}",
                  lambda m: m["data"]["count"] if m.get("channel") == ORDERS_TODAY else None,
                  settings.database, "SELECT order_id FROM orders ORDER BY rowid")


def seed_target(port: int, database: Path) -> Target:
    base = f"http://127.0.0.1:{port}"
    return Target(base + NOTIFY_PATH, base, f"ws://127.0.0.1:{port}/ws", base, lambda m: m["cnt"],
                  f"sqlite:///{database}", "SELECT id FROM orders ORDER BY rowid")


async def measure_path(settings: Settings, target: Target, rate: float, seconds: float) -> dict:
    """Post `rate` notifies/s for `seconds` and time each from its reply to the message counting it.

    Returns the percentiles plus ``orders``: order id -> (reply, shown), wall-clock seconds."""
    ws = await websocket_connect(HTTPRequest(target.ws_url, headers={"Origin": target.origin}))
    counts: list[tuple[float, int]] = []   # (arrival, count) of every message with a count
    base = None
    while base is None:                     # the snapshot comes first
        base = target.count(json.loads(await ws.read_message()))

    async def read() -> None:
        while True:
            message = await ws.read_message()
            if message is None:
                return
            shown = target.count(json.loads(message))
            if shown is not None:
                counts.append((time.time(), shown))

    reader = asyncio.create_task(read())
    replies: dict[str, float] = {}
    simulator = PaymentSimulator(settings, load_private_key(settings.provider_private_key_path), duplicate_share=0,
                                 url=target.notify_url, orders_url=target.orders_url)
    wall = time.time() - time.perf_counter()

    def on_reply(order_id: str, _cents: int, ok: bool, at: float) -> None:
        if ok:
            replies[order_id] = at + wall

    total = int(rate * seconds)
    with console.status(f"{rate:g} orders/s for {seconds:g}s") as status:
        report = await simulator.run(rate=rate, count=total, on_reply=on_reply,
                                     on_tick=lambda done, n: status.update(f"{rate:g} orders/s: {done}/{n}"))
        simulator.close()
        # Every stored order, in commit order: the one at position k is counted by the first message
        # showing k or more (an order stored whose reply was lost still moves the count).
        engine = make_engine(target.database)
        with engine.connect() as conn:
            stored = [r[0] for r in conn.execute(text(target.committed))]
        engine.dispose()
        deadline = time.monotonic() + 120
        while (not counts or counts[-1][1] < len(stored)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    reader.cancel()
    ws.close()
    if report.refused or report.accepted_orders < total / 2:
        raise SystemExit(f"the notify endpoint did not accept the notifies: {report.summary()}")
    if not counts or counts[-1][1] < len(stored):
        raise SystemExit(f"dashboard shows {counts[-1][1] if counts else base} of {len(stored)} orders after 120 s")
    orders, i = {}, 0
    for k, order_id in enumerate(stored, start=1):
        if order_id not in replies:
            continue
        while counts[i][1] < k:
            i += 1
        orders[order_id] = (replies[order_id], counts[i][0])
    result = percentiles([(shown - replied) * 1000 for replied, shown in orders.values()])
    result["messages"] = len(counts)
    result["notify_p99"] = percentiles(report.latencies_ms)["p99"]
    result["errors"] = report.errors
    console.log(f"{target.ws_url.split('?')[0]}: {result['n']} orders at {rate:g}/s, p50 {result['p50']:.1f} ms, "
                f"p99 {result['p99']:.1f} ms, max {result['max']:.1f} ms, {report.errors} notify errors")
    result["orders"] = orders
    return result


async def measure_rate(settings: Settings, rate: float, seconds: float) -> dict[str, float]:
    """The rtdash path at `rate` for `seconds` (bench/traffic_freshness measures its orders with this)."""
    result = await measure_path(settings, rtdash_target(settings), rate, seconds)
    result.pop("orders")
    return result


def record_times(settings: Settings, topic: str) -> dict[str, float]:
    """Order id (the record key) -> the record's timestamp (wall-clock seconds) of every record of `topic`."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=settings.kafka_servers, auto_offset_reset="earliest",
                             consumer_timeout_ms=3000)
    try:
        return {m.key.decode(): m.timestamp / 1000 for m in consumer if m.key}
    finally:
        consumer.close()


def stages(settings: Settings, orders: dict[str, tuple[float, float]]) -> dict[str, dict]:
    """Where the time of each measured order went, from the Kafka timestamps of its records."""
    relayed = record_times(settings, settings.orders_topic)
    rows = record_times(settings, settings.orders_realtime_topic) if settings.orders_mode == "realtime" else {}
    parts: dict[str, list[float]] = {}
    for order_id, (replied, shown) in orders.items():
        marks = [("reply", replied), ("orders record (relay)", relayed.get(order_id))]
        if settings.orders_mode == "realtime":
            marks.append(("orders.rows record (Spark real-time query)", rows.get(order_id)))
        marks.append(("WebSocket message", shown))
        if any(at is None for _, at in marks):
            continue
        for (_, before), (name, after) in zip(marks, marks[1:]):
            parts.setdefault(f"-> {name}", []).append((after - before) * 1000)
    return {name: percentiles(values) for name, values in parts.items()}


def seed_service(settings: Settings) -> tuple[Service, int, Path]:
    port, database = free_port(), (settings.home / "seed_direct.db").resolve()
    service = Service("seed_direct", [sys.executable, "-m", "bench.seed_direct", "--port", str(port),
                                      "--redis", settings.redis, "--database", str(database)],
                      settings.logs_dir / "seed_direct.log", health=lambda: http_ok(f"http://127.0.0.1:{port}/healthz"),
                      address=f"http://127.0.0.1:{port}", ready_timeout=20)
    return service, port, database


async def run(settings: Settings, args: argparse.Namespace, seed_port: int, seed_db: Path) -> dict:
    from bench.traffic_freshness import Dashboard, freshness, load_gateway, sample_batches

    results: dict[str, dict] = {}
    dashboard = Dashboard(settings)
    watcher = asyncio.create_task(dashboard.run())
    batches: dict[str, list[float]] = {}
    stop_sampling = asyncio.Event()
    sampler = asyncio.create_task(sample_batches(settings, batches, stop_sampling))
    loader, receive = None, None
    total_s = args.cold + args.warmup + 2 * args.seconds + 30
    if args.gateway_rate:
        context = multiprocessing.get_context("spawn")
        receive, send = context.Pipe(duplex=False)
        loader = context.Process(target=load_gateway, args=(settings.kafka_servers, settings.gateway_topic,
                                                            args.gateway_rate, total_s, 7, send))
        loader.daemon = True    # ends with the bench, also when a measurement fails
        loader.start()
    mode = f"{settings.orders_mode} mode"
    cold_stages = {}
    if args.cold:
        cold = await measure_path(settings, rtdash_target(settings), args.rate, args.cold)
        results[f"rtdash, {mode}: first {args.cold:g} s after healthy (cold)"] = cold
        cold_stages = stages(settings, cold["orders"])
    if args.warmup:
        await measure_rate(settings, 20, args.warmup)  # not reported
    since = time.monotonic()
    lags: list[float] = []
    lagging = asyncio.create_task(loop_lag(lags))
    warm = await measure_path(settings, rtdash_target(settings), args.rate, args.seconds)
    lagging.cancel()
    until = time.monotonic()
    results[f"rtdash, {mode}: notify -> WebSocket (warm)"] = warm
    seed = await measure_path(settings, seed_target(seed_port, seed_db), args.rate, args.seconds)
    results["seed's direct path: callback -> SQLite -> PUBLISH -> WebSocket"] = seed
    stop_sampling.set()
    await asyncio.gather(sampler, return_exceptions=True)   # a sample timing out under load is no result
    traffic = None
    if loader is not None:
        loaded = await asyncio.get_running_loop().run_in_executor(None, receive.recv)
        loader.join()
        deadline = time.monotonic() + 60
        while dashboard.shown() < dashboard.base + loaded["counts"]["page_views"] and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        traffic = percentiles(freshness(dashboard, loaded["marks"], since, until))
        traffic["rate"] = loaded["counts"]["requests"] / loaded["seconds"]
    watcher.cancel()
    return {"paths": results, "stages": stages(settings, warm["orders"]), "cold_stages": cold_stages,
            "traffic": traffic, "batches": batches, "loop_lag": percentiles(lags) if lags else None}


async def loop_lag(into: list[float]) -> None:
    """How late this process's event loop wakes up (ms), every 10 ms: the measuring client's own share."""
    while True:
        before = time.perf_counter()
        await asyncio.sleep(0.01)
        into.append((time.perf_counter() - before - 0.01) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("realtime", "microbatch"), default=None,
                        help="RTDASH_ORDERS_MODE for this run (default: the setting's)")
    parser.add_argument("--rate", type=float, default=200, help="paid orders/s (default 200)")
    parser.add_argument("--seconds", type=float, default=30, help="measured seconds per path (default 30)")
    parser.add_argument("--cold", type=float, default=10, help="seconds measured right after healthy (default 10)")
    parser.add_argument("--warmup", type=float, default=20,
                        help="seconds of 20 orders/s before the warm measurement, not reported (default 20)")
    parser.add_argument("--gateway-rate", type=float, default=2000,
                        help="gateway events/s for the traffic query the whole run (default 2000; 0: none)")
    parser.add_argument("--batch-seconds", type=float, default=None,
                        help="RTDASH_ORDERS_REALTIME_BATCH_SECONDS for this run")
    parser.add_argument("--trigger", type=float, default=None, help="RTDASH_SPARK_TRIGGER_SECONDS for this run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary RTDASH_HOME (logs)")
    args = parser.parse_args()
    load_before = load_average()

    home = Path(tempfile.mkdtemp(prefix="rtdash-bench-"))
    ports = ("kafka_port", "kafka_controller_port", "redis_port", "order_service_port",
             "order_service_internal_port", "payment_provider_port", "sms_gateway_port", "notifier_health_port",
             "shop_port", "gateway_port", "jobs_health_port", "push_port", "orders_applier_port",
             "orders_realtime_health_port")
    overrides: dict = dict(zip(ports, free_ports(len(ports))))
    for option, setting in (("mode", "orders_mode"), ("batch_seconds", "orders_realtime_batch_seconds"),
                            ("trigger", "spark_trigger_seconds")):
        if getattr(args, option) is not None:
            overrides[setting] = getattr(args, option)
    settings = Settings(_env_file=None, home=home, **overrides)
    demo_keys(settings)
    stack = Stack(settings, local_stack(settings))
    seed, seed_port, seed_db = seed_service(settings)
    try:
        with console.status("starting the local stack") as status:
            stack.start(on_step=status.update)
        seed.start()
        seed.wait_healthy()
        result = asyncio.run(run(settings, args, seed_port, seed_db))
    finally:
        with console.status("stopping the local stack"):
            seed.stop()
            stack.stop()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    load_after = load_average()

    paths = result["paths"]
    table = Table(title=f"notify -> WebSocket, ms ({args.rate:g} orders/s)")
    for col in ("what", "n", "p50", "p95", "p99", "max"):
        table.add_column(col, justify="left" if col == "what" else "right")
    lines = ["| what | n | p50 ms | p95 ms | p99 ms | max ms |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    table.add_column("notify errors", justify="right")
    rows = list(paths.items()) + [(f"  warm stage {name}", r) for name, r in result["stages"].items()]
    rows += [(f"  cold stage {name}", r) for name, r in result["cold_stages"].items()]
    if result["loop_lag"]:
        rows.append(("the measuring client's event loop lag (during the warm measurement)", result["loop_lag"]))
    if result["traffic"]:
        rows.append((f"gateway page view -> traffic.today, {result['traffic']['rate']:,.0f} events/s "
                     f"(during the warm rtdash measurement)", result["traffic"]))
    for name, r in rows:
        cells = [name, str(r["n"])] + [f"{r[k]:.1f}" for k in ("p50", "p95", "p99", "max")]
        table.add_row(*cells, str(r.get("errors", "")))
        lines.append("| " + " | ".join(cells) + " |")
    console.print(table)
    warm = next(r for name, r in paths.items() if "(warm)" in name)
    seed = next(r for name, r in paths.items() if name.startswith("seed"))
    errors = {name: r["errors"] for name, r in paths.items() if r.get("errors")}
    notes = [f"notify errors (timeouts, 5xx; the orders stored without a reply still counted): {errors or 'none'}",
             f"ratio rtdash / seed: p50 {warm['p50'] / seed['p50']:.2f}, p99 {warm['p99'] / seed['p99']:.2f}",
             f"p99 target <= {TARGET_P99_MS} ms: {'met' if warm['p99'] <= TARGET_P99_MS else 'missed'}"]
    for name, values in sorted(result["batches"].items()):
        if values:
            notes.append(f"{name} query: {len(values)} batches seen, last_batch_ms mean {statistics.fmean(values):.0f}, "
                         f"max {max(values):.0f}")
    notes.append(f"load average {load_before} before, {load_after} after")
    for line in notes:
        console.print(line)
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    header = (f"Measured {date.today()} on {machine()}; orders mode {settings.orders_mode}"
              + (f" (real-time batch {settings.orders_realtime_batch_seconds:g} s)"
                 if settings.orders_mode == "realtime" else f" (trigger {settings.spark_trigger_seconds:g} s)")
              + f", {args.rate:g} orders/s, {args.cold:g} s cold, {args.warmup:g} s warm-up at 20/s, "
              f"{args.seconds:g} s per path, gateway load {args.gateway_rate:g} events/s.\n\n")
    (out / f"e2e_latency_{settings.orders_mode}.md").write_text(header + "\n".join(lines) + "\n\n"
                                                                + "\n".join(notes) + "\n")
    console.print(f"written to {out / f'e2e_latency_{settings.orders_mode}.md'}")


if __name__ == "__main__":
    main()
