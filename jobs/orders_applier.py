"""The orders applier: the real-time path's rows into Redis, each paid order counted once.

In the `realtime` orders mode (RTDASH_ORDERS_MODE) the Spark real-time-mode
query (jobs/orders_realtime.py) parses and checks each OrderPaid and writes one
compact row per valid order to RTDASH_ORDERS_REALTIME_TOPIC. This process is
the rest of the path, and all of it: a Kafka consumer that hands what each poll
returns to ONE atomic Lua script (jobs/lua/orders_applier.lua), which

* adds each order id to its day's set of applied ids and counts the order only
  when the id was not there: a repeated order id is a no-op, whoever repeated
  it (the outbox relay publishing twice, the Spark query replaying its last
  batch after a restart, this consumer re-reading past its last commit);
* updates the day and minute totals, and publishes `orders.today` and
  `orders.per_minute` exactly as the micro-batch job does (snapshot, seq,
  epoch, history, PUBLISH; jobs/orders_sink.py describes the shapes);
* keeps a day's set of ids for RTDASH_ORDERS_APPLIED_IDS_SECONDS after its last
  order. A row of a day whose set has expired while its totals remain is
  refused (counted, logged): whether it was counted is not known any more, and
  the totals must stay exact.

Why a consumer outside Spark: in real-time mode rows reach a Python `foreach`
writer only at the end of each batch (seconds), and `foreachBatch` is refused;
the Kafka sink is continuous (BENCHMARKS.md). Why no offsets in Redis: the
per-order dedupe makes any replay harmless, so offsets are committed to the
consumer group after the script ran, asynchronously, off the latency path.

Usage:
    python -m jobs.orders_applier

Settings (environment, see README): RTDASH_KAFKA_BOOTSTRAP, RTDASH_ORDERS_REALTIME_TOPIC,
RTDASH_REDIS_URL, RTDASH_REDIS_PREFIX, RTDASH_TIMEZONE, RTDASH_ORDERS_APPLIED_IDS_SECONDS,
RTDASH_PUSH_HISTORY_SIZE/_SECONDS, RTDASH_BIND_HOST and RTDASH_ORDERS_APPLIER_PORT
(GET /healthz: 200 once the consumer has its partitions and the script ran; GET /metrics).
A broker that goes away (a restart) is waited for: `poll` is asked again with
pauses growing from 0.2 s to 5 s. SIGTERM or Ctrl-C commits what was applied and stops.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

import redis
import tornado.web
from kafka.errors import RetriableError
from prometheus_client import CollectorRegistry, Counter, Histogram

from jobs.checkpoint import load_script
from rtdash.channels import HISTORY_SECONDS, HISTORY_SIZE, ORDERS_PER_MINUTE, ORDERS_TODAY, stream_keys
from rtdash.contracts import from_json
from rtdash.metrics import metrics_route, request_logger
from rtdash.redis_client import redis_client
from rtdash.retry import retrying
from rtdash.settings import Settings

log = logging.getLogger("rtdash.jobs.orders_applier")

GROUP = "rtdash-orders-applier"
TTL_SECONDS = 8 * 24 * 3600          # the day and minute hashes, as jobs/orders_sink.py keeps them
# How long one poll waits for rows; the broker answers at once when a row arrives, so this only
# bounds how soon the loop sees a stop or a new day.
POLL_MS = 200
# With no rows for this long the loop still moves the snapshots to a new day (the zero before its first order).
IDLE_REFRESH_S = 10.0


@dataclass(frozen=True)
class OrderRow:
    """One valid paid order as the real-time query writes it (jobs/orders_realtime.py), key = order id."""

    order_id: str
    amount_cents: int
    date: str             # YYYY-MM-DD in RTDASH_TIMEZONE
    minute: str           # HH:MM in RTDASH_TIMEZONE
    recorded_ms: int      # when the order service recorded the payment (ms since the epoch, UTC)


@dataclass(frozen=True)
class Applied:
    """What one script call did: orders counted now, repeats (no-ops), refused (their day's ids expired)."""

    applied: int = 0
    repeated: int = 0
    refused: int = 0


def recorded_at(ms: int) -> str:
    """`recorded_ms` as the `last_recorded_at` text of orders.today (ISO 8601, UTC, milliseconds)."""
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds")


class OrdersApplier:
    """Applies order rows to Redis, once per order id; safe to call again with rows it has seen."""

    def __init__(self, client: redis.Redis, prefix: str, *, ids_ttl_seconds: int, ttl_seconds: int = TTL_SECONDS,
                 history_size: int = HISTORY_SIZE, history_seconds: float = HISTORY_SECONDS):
        if ids_ttl_seconds > ttl_seconds:
            raise ValueError("a day's applied ids must not outlive its totals")
        self.prefix = prefix
        self._args = [str(ttl_seconds), str(ids_ttl_seconds)]
        self._history = [history_size, history_seconds]
        self._script = client.register_script(
            load_script("orders_applier", guarded=False, library=("orders_channels",)))
        self._keys = [*stream_keys(prefix, ORDERS_TODAY), *stream_keys(prefix, ORDERS_PER_MINUTE)]

    def apply(self, rows: Iterable[OrderRow], today: str) -> Applied:
        """Count the rows not counted before and publish today's channels when they changed (or show another day)."""
        payload = json.dumps([[r.order_id, r.date, r.minute, str(r.amount_cents), recorded_at(r.recorded_ms)]
                              for r in rows], separators=(",", ":"))
        applied, repeated, refused = self._script(
            keys=self._keys, args=[self.prefix, today, *self._args, payload, ORDERS_TODAY, ORDERS_PER_MINUTE,
                                   *self._history])
        return Applied(applied, repeated, refused)

    def ensure_today(self, today: str) -> None:
        """Give `today` its snapshots (zero before its first order) when they still show another day."""
        self.apply([], today)


def parse_rows(values: Iterable[bytes]) -> tuple[list[OrderRow], list[str]]:
    """(the rows, why each unreadable value is unreadable): the query writes only valid rows, so any
    unreadable one is a writer of another version, logged and skipped, never a stop."""
    rows, errors = [], []
    for value in values:
        try:
            rows.append(from_json(OrderRow, value))
        except ValueError as exc:
            errors.append(str(exc).splitlines()[0])
    return rows, errors


@dataclass
class Status:
    """The consumer thread's state and counts, for /healthz and the log's last line."""

    state: str = "starting"          # starting, running, stopped, failed
    partitions: list[int] = dataclasses.field(default_factory=list)
    applied: int = 0
    repeated: int = 0
    refused: int = 0
    bad_rows: int = 0
    last_error: str | None = None


class ApplierMetrics:
    """The applier's Prometheus metrics (its own registry)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.orders = Counter("rtdash_orders_applier_orders_total",
                              "Order rows by outcome: applied (counted), repeated (a no-op), refused "
                              "(its day's applied ids expired)", ["outcome"], registry=self.registry)
        self.bad_rows = Counter("rtdash_orders_applier_bad_rows_total", "Unreadable rows skipped",
                                registry=self.registry)
        self.apply_seconds = Histogram("rtdash_orders_applier_apply_seconds", "One script call (a poll's rows)",
                                       buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
                                       registry=self.registry)
        for outcome in ("applied", "repeated", "refused"):
            self.orders.labels(outcome)


class ApplierLoop:
    """The consumer thread: poll -> parse -> one script call -> commit (async), until stopped."""

    def __init__(self, settings: Settings, consumer_factory: Callable[[], object], applier: OrdersApplier,
                 metrics: ApplierMetrics, on_exit: Callable[[], None] = lambda: None):
        self.settings = settings
        self.consumer_factory = consumer_factory
        self.applier = applier
        self.metrics = metrics
        self.on_exit = on_exit
        self.status = Status()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orders-applier", daemon=True)

    @property
    def ready(self) -> bool:
        return self.status.state == "running" and bool(self.status.partitions)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _today(self) -> str:
        return datetime.now(self.settings.tz).date().isoformat()

    def _apply(self, rows: list[OrderRow]) -> Applied:
        """The script call, retried while Redis is away (nothing is committed before it ran)."""
        for attempt in retrying(first_s=0.2, max_s=5, stop=self._stop, on=redis.RedisError, log=log,
                                what="applying orders to Redis"):
            with attempt:
                started = time.perf_counter()
                done = self.applier.apply(rows, self._today())
                self.metrics.apply_seconds.observe(time.perf_counter() - started)
        return done

    def _poll(self, consumer) -> dict:
        """The next records, asked again while the broker is away (a retriable Kafka error, such as the
        refused connection of a broker restarting); nothing once stopped during the outage."""
        try:
            for attempt in retrying(first_s=0.2, max_s=5, stop=self._stop, on=RetriableError, log=log,
                                    what="reading the orders rows"):
                with attempt:
                    return consumer.poll(timeout_ms=POLL_MS, max_records=1000)
        except RetriableError:
            if not self._stop.is_set():
                raise
        return {}

    def _run(self) -> None:
        consumer = None
        try:
            self._apply([])   # the script loaded and today's snapshots in place before any order
            consumer = self.consumer_factory()
            idle_since = time.monotonic()
            self.status.state = "running"
            while not self._stop.is_set():
                polled = self._poll(consumer)
                partitions = sorted(tp.partition for tp in consumer.assignment())
                if partitions != self.status.partitions:
                    self.status.partitions = partitions
                    log.info("reading %s partitions %s", self.settings.orders_realtime_topic, partitions)
                values = [record.value for records in polled.values() for record in records]
                if not values:
                    if time.monotonic() - idle_since > IDLE_REFRESH_S:
                        self._apply([])
                        idle_since = time.monotonic()
                    continue
                rows, errors = parse_rows(values)
                done = self._apply(rows) if rows else Applied()
                self._count(done, errors)
                consumer.commit_async()
                idle_since = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - reported by /healthz and the exit status
            self.status.state, self.status.last_error = "failed", str(exc).splitlines()[0]
            log.exception("orders applier failed")
        else:
            self.status.state = "stopped"
        finally:
            if consumer is not None:
                try:
                    consumer.commit()
                except Exception as exc:  # noqa: BLE001 - replays are no-ops: log and go
                    log.warning("last commit failed: %s", exc)
                consumer.close()
            self.on_exit()

    def _count(self, done: Applied, errors: list[str]) -> None:
        status, metrics = self.status, self.metrics
        status.applied += done.applied
        status.repeated += done.repeated
        status.refused += done.refused
        status.bad_rows += len(errors)
        for outcome in ("applied", "repeated", "refused"):
            if getattr(done, outcome):
                metrics.orders.labels(outcome).inc(getattr(done, outcome))
        if errors:
            metrics.bad_rows.inc(len(errors))
            log.warning("%d unreadable rows skipped, first: %s", len(errors), errors[0])
        if done.refused:
            log.warning("%d orders refused: their day's applied ids have expired (RTDASH_ORDERS_APPLIED_IDS_"
                        "SECONDS) while its totals remain", done.refused)


class HealthHandler(tornado.web.RequestHandler):
    def initialize(self, *, loop: ApplierLoop) -> None:
        self.loop = loop

    def get(self) -> None:
        """200 once the consumer has its partitions and the script ran (the path is warm), else 503."""
        self.set_status(200 if self.loop.ready else 503)
        self.finish({"status": "ok" if self.loop.ready else self.loop.status.state, "service": "orders_applier",
                     "topic": self.loop.settings.orders_realtime_topic, **dataclasses.asdict(self.loop.status)})


def kafka_consumer(settings: Settings, group: str = GROUP):
    from kafka import KafkaConsumer

    # Static membership: a restarted applier takes its partitions back at once (see producers/notifier).
    return KafkaConsumer(settings.orders_realtime_topic, bootstrap_servers=settings.kafka_servers, group_id=group,
                         group_instance_id=f"{group}-1", client_id="rtdash-orders-applier",
                         enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=100,
                         bootstrap_timeout_ms=5000, reconnect_backoff_max_ms=1000)


async def main(settings: Settings | None = None) -> None:
    from rtdash.service import listen, until_stopped

    settings = settings or Settings()
    metrics = ApplierMetrics()
    applier = OrdersApplier(redis_client(settings), settings.redis_prefix,
                            ids_ttl_seconds=settings.orders_applied_ids_seconds,
                            history_size=settings.push_history_size, history_seconds=settings.push_history_seconds)
    aio, stop = asyncio.get_running_loop(), asyncio.Event()

    def ended() -> None:
        if not aio.is_closed():
            aio.call_soon_threadsafe(stop.set)

    loop = ApplierLoop(settings, lambda: kafka_consumer(settings), applier, metrics, on_exit=ended)
    app = tornado.web.Application([(r"/healthz", HealthHandler, dict(loop=loop)), metrics_route(metrics.registry)],
                                  log_function=request_logger(metrics.registry))
    server = listen(app, settings, settings.orders_applier_port)
    loop.start()
    log.info("orders applier reading %s as group %s from %s into Redis prefix %s (health http://%s:%d/healthz)",
             settings.orders_realtime_topic, GROUP, settings.kafka_servers, settings.redis_prefix,
             settings.bind_host, settings.orders_applier_port)
    await until_stopped(stop)
    server.stop()
    await aio.run_in_executor(None, loop.stop)
    status = loop.status
    log.info("orders applier stopped%s: %d applied, %d repeated, %d refused, %d bad rows",
             " after its consumer failed" if status.state == "failed" else "", status.applied, status.repeated,
             status.refused, status.bad_rows)
    if status.state == "failed":
        raise SystemExit(1)


if __name__ == "__main__":
    from rtdash.logs import setup_logging

    setup_logging()
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # each reconnect at ERROR; outages show in /healthz
    asyncio.run(main())
