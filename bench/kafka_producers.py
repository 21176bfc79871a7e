"""Producing gateway events with kafka-python and with confluent-kafka (librdkafka), in one run.

Starts a Kafka broker under a temporary home on free ports and writes the same
gateway events (bench/gateway_events.py, key = visitor id, value =
rtdash.contracts.to_json) with each library, both at the gateway's settings:
acks=1, linger 50 ms, no compression, a delivery callback counting each event
(librdkafka's callbacks served by a poll thread, as the gateway serves them).
Per library:

* burst: every event as fast as the library takes it (kafka-python's send
  waits when its buffer is full; on a full librdkafka queue the loop waits 1 ms
  and tries again): events/s from the first send to the last acknowledgement,
  and the CPU seconds the whole producing process (all its threads) spent per
  10,000 events;
* paced at --rate events/s, as a gateway's steady traffic: CPU seconds per
  10,000 events, and how long one send/produce call keeps the caller (p50,
  p99, max; serialisation is not in it, it is the same for both).

Every event must be acknowledged, and each topic must hold exactly what was
sent, or the run fails. Writes bench/results/kafka_producers.md.

Usage:
    .venv/bin/python -m bench.kafka_producers [--events 100000] [--rate 2000] [--seconds 10]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import kafka
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka import libversion, version as confluent_version
from kafka import KafkaProducer
from rich.console import Console
from rich.table import Table

from bench.machine import load_average, machine
from bench.gateway_events import ShopperLog
from rtdash.contracts import GatewayRequest, to_json
from rtdash.kafka_admin import ensure_topics
from rtdash.kafka_producer import make_producer
from rtdash.settings import Settings
from stack.kafka import kafka_service
from stack.testing import free_port

console = Console()
Record = tuple[bytes, bytes]


def gateway_events(count: int, seed: int) -> list[GatewayRequest]:
    """`count` realistic gateway events, sessions after one another from now on."""
    log = ShopperLog(seed=seed, visitors=20_000, users=5_000)
    events: list[GatewayRequest] = []
    start = datetime.now(timezone.utc)
    while len(events) < count:
        events += [event for _, event in log.session(start)]
        start += timedelta(seconds=1)
    return events[:count]


class Library:
    """One library's producer, driven as the gateway drives it: a non-blocking send, counted acknowledgements."""

    name = ""
    producer: Any

    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0
        self.queue_full = 0    # librdkafka only: produce() calls refused on a full queue

    def send(self, topic: str, key: bytes, value: bytes) -> bool:
        """Hand one event over; False when refused (the caller tries again)."""
        raise NotImplementedError

    def flush(self, timeout: float) -> None:
        self.producer.flush(timeout)   # both libraries: wait until every event was acknowledged

    def close(self) -> None:
        raise NotImplementedError


class KafkaPython(Library):
    name = f"kafka-python {kafka.__version__}"

    def __init__(self, servers: str) -> None:
        super().__init__()
        self.producer = KafkaProducer(bootstrap_servers=servers.split(","), client_id="bench-kafka-python", acks=1,
                                      linger_ms=50, compression_type=None)

    def _ok(self, _metadata) -> None:
        self.delivered += 1    # futures complete on the producer's one I/O thread

    def _error(self, _exc) -> None:
        self.failed += 1

    def send(self, topic: str, key: bytes, value: bytes) -> bool:
        future = self.producer.send(topic, key=key, value=value)
        future.add_callback(self._ok)
        future.add_errback(self._error)
        return True

    def close(self) -> None:
        self.producer.close(5)


class Librdkafka(Library):
    name = f"confluent-kafka {confluent_version()} (librdkafka {libversion()[0]})"

    def __init__(self, servers: str, queue_messages: int) -> None:
        super().__init__()
        self.producer = make_producer(servers, client_id="bench-confluent-kafka", acks=1, linger_ms=50,
                                      queue_messages=queue_messages, extra={"on_delivery": self._report})
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="bench-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.1)

    def _report(self, err, _msg) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed += 1

    def send(self, topic: str, key: bytes, value: bytes) -> bool:
        try:
            self.producer.produce(topic, value, key)
            return True
        except BufferError:
            self.queue_full += 1
            return False

    def close(self) -> None:
        self._stop.set()
        self._poller.join(5)


@dataclass
class Run:
    library: str
    phase: str
    events: int
    seconds: float
    cpu_s: float
    calls_us: list[float]
    queue_full: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_per_10k(self) -> float:
        return self.cpu_s / self.events * 10_000

    def call_us(self, p: float) -> float:
        ordered = sorted(self.calls_us)
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def produce(library: Library, topic: str, events: list[GatewayRequest], phase: str,
            pace: Callable[[int], None] | None = None, timeout: float = 120) -> Run:
    """Send `events` to `topic` (paced by `pace(i)` before event i), wait for every acknowledgement."""
    calls: list[float] = []
    clock = time.perf_counter_ns
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i, event in enumerate(events):
        if pace is not None:
            pace(i)
        key, value = event.key(), to_json(event)
        while True:
            before = clock()
            taken = library.send(topic, key, value)
            calls.append((clock() - before) / 1000)
            if taken:
                break
            time.sleep(0.001)
    library.flush(timeout)
    deadline = time.monotonic() + timeout
    while library.delivered + library.failed < len(events) and time.monotonic() < deadline:
        time.sleep(0.001)   # librdkafka: the poll thread serves the last callbacks
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if library.failed or library.delivered != len(events):
        raise SystemExit(f"{library.name}, {phase}: {library.delivered} of {len(events)} acknowledged, "
                         f"{library.failed} failed")
    return Run(library.name, phase, len(events), seconds, cpu, calls, library.queue_full)


def paced(rate: float) -> Callable[[int], None]:
    start = time.perf_counter()

    def wait(i: int) -> None:
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    return wait


def records_on(servers: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": servers, "group.id": "bench-kafka-producers"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions)
    finally:
        consumer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events of the burst, per library")
    parser.add_argument("--rate", type=float, default=2000, help="events/s of the paced phase")
    parser.add_argument("--seconds", type=float, default=10, help="length of the paced phase")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    load_before = load_average()
    home = Path(tempfile.mkdtemp(prefix="rtdash-bench-producers-"))
    settings = Settings(_env_file=None, home=home, kafka_port=free_port(), kafka_controller_port=free_port())
    paced_events = int(args.rate * args.seconds)
    with console.status("generating events"):
        events = gateway_events(args.events + paced_events, args.seed)
    burst, steady = events[:args.events], events[args.events:]
    size = statistics.fmean(len(to_json(e)) for e in events[:10_000])
    started = time.perf_counter()
    for event in events[:10_000]:
        to_json(event)
    serialise_us = (time.perf_counter() - started) / 10_000 * 1e6
    console.print(f"{len(events):,} gateway events, {size:.0f} bytes each on average, "
                  f"to_json {serialise_us:.1f} us each")

    libraries: dict[str, Callable[[], Library]] = {
        "kafka_python": lambda: KafkaPython(settings.kafka_servers),
        "confluent_kafka": lambda: Librdkafka(settings.kafka_servers, settings.gateway_queue_size)}
    runs: list[Run] = []
    try:
        with kafka_service(settings):
            topics = {(lib, phase): f"bench-{lib}-{phase}" for lib in libraries for phase in ("warm", "burst", "paced")}
            ensure_topics(settings, list(topics.values()))
            phases = {"warm": (events[:5_000], None), "burst": (burst, None), "paced": (steady, args.rate)}
            for phase, (chunk, pace) in phases.items():
                for lib, build in libraries.items():
                    library = build()
                    with console.status(f"{library.name}: {phase}, {len(chunk):,} events"):
                        run = produce(library, topics[lib, phase], chunk, phase,
                                      paced(pace) if pace else None)
                    library.close()
                    if phase != "warm":   # the broker's and each library's first connection: not compared
                        runs.append(run)
            for (lib, phase), topic in topics.items():
                expected = len(phases[phase][0])
                on_topic = records_on(settings.kafka_servers, topic)
                if on_topic != expected:
                    raise SystemExit(f"{topic} holds {on_topic} records, {expected} were sent")
    finally:
        shutil.rmtree(home, ignore_errors=True)

    table = Table(title="producing gateway events (acks=1, linger 50 ms, no compression)")
    header = ("library", "phase", "events", "events/s", "CPU s per 10k events", "call p50 us", "call p99 us",
              "call max us", "queue full")
    for col in header:
        table.add_column(col)
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in runs:
        row = (r.library, r.phase if r.phase == "burst" else f"paced {args.rate:g}/s", f"{r.events:,}",
               f"{r.rate:,.0f}", f"{r.cpu_per_10k:.2f}", f"{r.call_us(50):.1f}", f"{r.call_us(99):.1f}",
               f"{max(r.calls_us):,.0f}", f"{r.queue_full:,}")
        table.add_row(*row)
        lines.append("| " + " | ".join(row) + " |")
    console.print(table)
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "kafka_producers.md").write_text(
        f"Measured {date.today()} on {machine()}; load average {load_before} before the run; "
        f"{size:.0f}-byte events, to_json {serialise_us:.1f} us each (not in the call times); "
        f"librdkafka queue {settings.gateway_queue_size:,} events.\n\n" + "\n".join(lines) + "\n")
    console.print(f"written to {out / 'kafka_producers.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
