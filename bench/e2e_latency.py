"""End-to-end latency: from a notify's `success` reply to the dashboard message that counts it.

Starts the whole local stack as `rtdash up` does (real Kafka, Redis, order
service, Spark orders job, push server) under a temporary home on free ports,
connects a WebSocket client like a dashboard, and posts signed notifies at a
steady rate (the payment simulator places each order in the order service's
internal API first, as the shop does). Per order, latency = arrival of the
first `orders.today` message whose count includes the order - arrival of the
order's `success` reply.

"Includes" is exact, not guessed: the order service commits orders one at a
time in one database thread, the relay publishes the outbox in commit order to
a single partition, and the job counts in offset order; so the k-th order of
the run in commit order (SQLite rowid) is counted by the first message whose
count reaches base + k. No duplicates are sent, so none are dropped.

In the same run it measures the floor of a Spark micro-batch on this machine:
a trivial Kafka -> foreachBatch -> Redis PUBLISH query (bench/spark_floor.py)
with the same trigger, timed from the producer's ack to the Redis message.

Usage:
    .venv/bin/python -m bench.e2e_latency [--rates 20 200] [--seconds 20] [--warmup 20]
        [--floor-records 200] [--trigger SECONDS] [--shuffle-partitions N]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import redis
from rich.console import Console
from rich.table import Table
from sqlalchemy import text
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from bench.machine import machine
from rtdash.database import make_engine
from producers.provider.simulator import PaymentSimulator
from push_server.tokens import Tokens
from rtdash.channels import ORDERS_TODAY
from rtdash.kafka_producer import make_producer
from rtdash.keys import demo_keys, load_private_key
from rtdash.settings import Settings
from rtdash.kafka_admin import ensure_topics
from stack.runner import Service, Stack
from stack.services import local_stack
from stack.testing import free_port

console = Console()


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]
    return {"n": len(ordered), "p50": pct(50), "p95": pct(95), "p99": pct(99), "max": ordered[-1],
            "mean": statistics.fmean(ordered)}


async def measure_rate(settings: Settings, rate: float, seconds: float) -> dict[str, float]:
    token = Tokens.from_settings(settings).issue(subject="bench")
    ws = await websocket_connect(HTTPRequest(f"ws://127.0.0.1:{settings.push_port}/ws?token={token}",
                                             headers={"Origin": f"http://127.0.0.1:{settings.push_port}"}))
    counts: list[tuple[float, int]] = []   # (arrival, count) of every orders.today message
    base = None
    while base is None:                     # the snapshot comes first
        envelope = json.loads(await ws.read_message())
        if envelope["channel"] == ORDERS_TODAY:
            base = envelope["data"]["count"]

    async def read() -> None:
        while True:
            message = await ws.read_message()
            if message is None:
                return
            envelope = json.loads(message)
            if envelope["channel"] == ORDERS_TODAY:
                counts.append((time.perf_counter(), envelope["data"]["count"]))

    reader = asyncio.create_task(read())
    replies: dict[str, float] = {}
    simulator = PaymentSimulator(settings, load_private_key(settings.provider_private_key_path), duplicate_share=0)

    def on_reply(order_id: str, _cents: int, ok: bool, at: float) -> None:
        if ok:
            replies[order_id] = at

    total = int(rate * seconds)
    with console.status(f"{rate:g} orders/s for {seconds:g}s") as status:
        report = await simulator.run(rate=rate, count=total, on_reply=on_reply,
                                     on_tick=lambda done, n: status.update(f"{rate:g} orders/s: {done}/{n}"))
        simulator.close()
        deadline = time.monotonic() + 120
        while (not counts or counts[-1][1] < base + report.accepted_orders) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    reader.cancel()
    ws.close()
    if report.errors or report.refused or report.accepted_orders != total:
        raise SystemExit(f"order service did not accept every notify: {report.summary()}")
    if counts[-1][1] != base + total:
        raise SystemExit(f"dashboard shows {counts[-1][1] - base} of {total} orders after 120 s")

    engine = make_engine(settings.database)
    with engine.connect() as conn:
        committed = [r[0] for r in conn.execute(text("SELECT order_id FROM orders ORDER BY rowid"))
                     if r[0] in replies]
    engine.dispose()
    latencies, i = [], 0
    for k, order_id in enumerate(committed, start=1):
        while counts[i][1] < base + k:
            i += 1
        latencies.append((counts[i][0] - replies[order_id]) * 1000)
    result = percentiles(latencies)
    result["messages"] = len(counts)
    result["notify_p99"] = percentiles(report.latencies_ms)["p99"]
    return result


def measure_floor(settings: Settings, records: int, rate: float) -> dict[str, float]:
    topic, channel = "bench.floor", "bench:floor"
    ensure_topics(settings, [topic])
    floor = Service("spark_floor", [sys.executable, "-m", "bench.spark_floor", "--topic", topic,
                                    "--channel", channel],
                    settings.logs_dir / "spark_floor.log", env=settings.child_env(), health=lambda: True)
    client = redis.Redis.from_url(settings.redis)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    received: dict[str, float] = {}

    def listen() -> None:
        try:
            for message in pubsub.listen():
                received.setdefault(message["data"].decode(), time.perf_counter())
        except (redis.RedisError, ValueError, OSError):
            return  # the pub/sub connection was closed at the end of the run

    threading.Thread(target=listen, daemon=True).start()
    producer = make_producer(settings.kafka_servers, client_id="rtdash-bench-floor", acks="all", linger_ms=0)

    def send(value: bytes) -> None:
        """One record, returning once Kafka has acknowledged it."""
        failed: list = []
        producer.produce(topic, value, on_delivery=lambda err, _msg: failed.append(err) if err else None)
        if producer.flush(10) or failed:
            raise SystemExit(f"Kafka did not take a floor record: {failed[:1] or 'no answer in 10 s'}")
    floor.start()
    try:
        with console.status("spark floor: waiting for the trivial query to run"):
            deadline = time.monotonic() + 180
            while not any(k.startswith("warm") for k in received) and time.monotonic() < deadline:
                send(f"warm{time.time()}".encode())
                time.sleep(1)
            time.sleep(3)
        acked: dict[str, float] = {}
        with console.status(f"spark floor: {records} records at {rate:g}/s"):
            start = time.perf_counter()
            for n in range(records):
                delay = start + n / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                value = f"r{n}"
                send(value.encode())
                acked[value] = time.perf_counter()
            deadline = time.monotonic() + 60
            while len([v for v in acked if v in received]) < records and time.monotonic() < deadline:
                time.sleep(0.05)
        missing = [v for v in acked if v not in received]
        if missing:
            raise SystemExit(f"floor query lost {len(missing)} records")
        return percentiles([(received[v] - acked[v]) * 1000 for v in acked])
    finally:
        floor.stop()
        producer.close()
        pubsub.close()
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[20, 200])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--floor-records", type=int, default=200)
    parser.add_argument("--trigger", type=float, default=None, help="RTDASH_SPARK_TRIGGER_SECONDS for this run")
    parser.add_argument("--shuffle-partitions", type=int, default=None,
                        help="RTDASH_SPARK_SHUFFLE_PARTITIONS for this run")
    parser.add_argument("--warmup", type=float, default=20,
                        help="seconds of 20 orders/s before measuring (the JVM compiles Spark's hot paths)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="rtdash-bench-"))
    overrides = dict(home=home, kafka_port=free_port(), kafka_controller_port=free_port(),
                     redis_port=free_port(), order_service_port=free_port(),
                     order_service_internal_port=free_port(), push_port=free_port(),
                     jobs_health_port=free_port())
    if args.trigger is not None:
        overrides["spark_trigger_seconds"] = args.trigger
    if args.shuffle_partitions is not None:
        overrides["spark_shuffle_partitions"] = args.shuffle_partitions
    settings = Settings(_env_file=None, **overrides)
    demo_keys(settings)
    stack = Stack(settings, local_stack(settings))
    results: dict[str, dict] = {}
    try:
        with console.status("starting the local stack") as status:
            stack.start(on_step=status.update)
        if args.warmup:
            asyncio.run(measure_rate(settings, 20, args.warmup))  # not reported
        for rate in args.rates:
            results[f"end to end, {rate:g} orders/s"] = asyncio.run(measure_rate(settings, rate, args.seconds))
        job = next(s for s in stack.services if s.name == "spark_jobs")
        job.stop()  # the floor query gets the CPU the Spark application had
        results["Spark floor (trivial Kafka -> Redis query)"] = measure_floor(settings, args.floor_records, 20)
    finally:
        with console.status("stopping the local stack"):
            stack.stop()

    table = Table(title=f"end-to-end latency, ms (trigger {settings.spark_trigger_seconds:g} s)")
    for col in ("what", "n", "p50", "p95", "p99", "max"):
        table.add_column(col)
    lines = ["| what | n | p50 ms | p95 ms | p99 ms | max ms |", "| --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        table.add_row(name, str(r["n"]), *(f"{r[k]:.0f}" for k in ("p50", "p95", "p99", "max")))
        lines.append(f"| {name} | {r['n']} | " + " | ".join(f"{r[k]:.0f}" for k in ("p50", "p95", "p99", "max")) + " |")
    console.print(table)
    out = Path("bench/results"); out.mkdir(parents=True, exist_ok=True)
    (out / "e2e_latency.md").write_text(
        f"Measured {date.today()} on {machine()}; trigger {settings.spark_trigger_seconds:g} s, "
        f"shuffle partitions {settings.spark_shuffle_partitions}, {args.warmup:g} s warm-up at 20/s, "
        f"{args.seconds:g} s per rate.\n\n" + "\n".join(lines) + "\n")
    console.print(f"written to {out / 'e2e_latency.md'}")


if __name__ == "__main__":
    main()
