"""Running rtdash's streaming queries as a service: one Spark application, several queries.

A job module (jobs/orders.py, jobs/traffic.py, jobs/alerts.py) is its data
flow: read -> transform -> write, ending in a `start(spark, settings)` that
starts one streaming query. What makes such queries a service lives here, once:

* `run_job(specs, ...)`: the process's main. Parses the arguments, builds the
  SparkSession, starts every query under a supervisor, serves the health
  endpoint, and stops the queries and the session on SIGTERM or Ctrl-C;
* a supervisor thread per query restarts a failed query from its checkpoint
  after pauses doubling to a cap (rtdash.retry), so one query's failure
  (Redis down, a broker outage) leaves the others running;
* `GET /healthz` on RTDASH_BIND_HOST:RTDASH_JOBS_HEALTH_PORT answers 200 when
  every query is active and none is stalled (503 otherwise, with the reason),
  with one entry per query: status, restarts, last error, its last micro-batch
  (id, input rows, duration), and how long input has waited for it. A query is
  stalled when input has waited longer than RTDASH_JOBS_STALL_SECONDS with no
  micro-batch completed (jobs/stall.py): Spark itself reports nothing wrong then;
* `GET /metrics` on the same port: per query, micro-batches completed, their
  durations and input rows, and the input lag (jobs/metrics.py).

`python -m jobs` runs all of the queries in one application (the local stack
does this: on a small machine a second driver JVM would take the cores the
orders path's latency needs); each job file still runs alone, also under
`spark-submit`.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from jobs.metrics import JobMetrics
from jobs.stall import StallWatch
from rtdash.metrics import CONTENT_TYPE_LATEST, exposition
from rtdash.retry import retrying
from rtdash.settings import Settings

log = logging.getLogger("rtdash.jobs")

# Pauses before restarting a failed query: doubling from the first to the largest.
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
# A query that ran this long before failing has a new failure: its pauses start over.
BACKOFF_RESET_AFTER_S = 60.0
# How often a supervisor looks at its query.
WATCH_S = 0.5
# How often it reads the query's progress and status for the stall watch.
LOOK_S = 2.0


@dataclass(frozen=True)
class QuerySpec:
    """One streaming query of the application: its health name and how to start it."""

    name: str
    start: Callable[[SparkSession, Settings], StreamingQuery]
    # Figures of the query's own for its health entry (e.g. the traffic job's late events).
    figures: Callable[[Settings], dict] | None = None


@dataclass
class QueryState:
    """What the health endpoint reports of one query; written by its supervisor."""

    name: str
    query: StreamingQuery | None = None
    restarts: int = 0
    last_error: str | None = None
    stall: StallWatch = field(default_factory=StallWatch)
    metrics: JobMetrics | None = None    # the runner's: each completed micro-batch counted once

    def look(self, now: float) -> tuple[bool, dict | None, dict | None]:
        """Read the query's progress and status once, note them in the stall watch; (active, progress, status)."""
        query = self.query
        active = query is not None and query.isActive
        progress = query.lastProgress if query is not None else None
        status = query.status if active else None
        self.stall.look(progress, status, now)
        if self.metrics is not None:
            self.metrics.note(self.name, query, progress)
        return active, progress, status

    def health(self, now: float | None = None, stall_s: float = float("inf")) -> dict:
        """The query's entry in /healthz at `now` (monotonic seconds); stalled once input waited over `stall_s`."""
        now = time.monotonic() if now is None else now
        active, progress, status = self.look(now)
        waited = self.stall.waiting_for(now) if active else None
        report = {"active": active, "query": self.query.name if self.query is not None else None,
                  "query_status": status["message"] if status else None,
                  "restarts": self.restarts, "last_error": self.last_error,
                  "last_batch": progress["batchId"] if progress else None,
                  "last_input_rows": progress["numInputRows"] if progress else None,
                  "last_batch_ms": progress["durationMs"].get("triggerExecution") if progress else None,
                  "input_waiting_s": round(waited, 1) if waited is not None else None,
                  "stalled": waited is not None and waited > stall_s}
        return report


class QueryFailed(Exception):
    """A query stopped with an error, or could not start, soon after it was started."""


class JobRunner:
    """Starts each query under its own supervisor thread; `stop()` ends them all."""

    def __init__(self, spark: SparkSession, settings: Settings, specs: list[QuerySpec], *,
                 clock: Callable[[], float] = time.monotonic):
        if len({spec.name for spec in specs}) != len(specs):
            raise ValueError("query names must be unique")
        self.spark = spark
        self.settings = settings
        self.specs = specs
        self.clock = clock
        self.metrics = JobMetrics()
        self.states = {spec.name: QueryState(spec.name, metrics=self.metrics) for spec in specs}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for spec in self.specs:
            thread = threading.Thread(target=self._supervise, args=(spec,), name=f"supervise-{spec.name}")
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def health(self) -> dict:
        """Every query's report; healthy when all are active and none is stalled (else a reason says why)."""
        now, limit = self.clock(), self.settings.jobs_stall_seconds
        queries = {name: state.health(now, limit) for name, state in self.states.items()}
        for spec in self.specs:
            if spec.figures is not None:
                try:
                    queries[spec.name].update(spec.figures(self.settings))
                except Exception as exc:  # noqa: BLE001 - e.g. Redis down: the health says so, not a 500
                    queries[spec.name]["figures_error"] = str(exc)
        active = all(q["active"] for q in queries.values())
        stalled = [name for name, q in queries.items() if q["stalled"]]
        health = {"status": "stalled" if stalled else "ok" if active else "starting", "service": "spark_jobs",
                  "active": active, "healthy": active and not stalled, "queries": queries}
        if stalled:
            health["reason"] = "; ".join(
                f"query {name}: input has waited {queries[name]['input_waiting_s']:.0f}s with no micro-batch "
                f"completed (limit {limit:g}s; Spark says: {queries[name]['query_status']})" for name in stalled)
        return health

    def _supervise(self, spec: QuerySpec) -> None:
        """Run one query until stopped; restart it from its checkpoint when it fails or cannot start.

        A query that keeps failing soon after each start waits longer before each restart
        (BACKOFF_FIRST_S doubling up to BACKOFF_MAX_S); one that ran BACKOFF_RESET_AFTER_S before
        failing has failed anew, and its pauses start over. Stopping the runner ends a pause.
        """
        state = self.states[spec.name]
        # The query's jobs run in the scheduler pool of its name (jobs/fairscheduler.xml): the
        # property is the thread's, and Spark's stream thread inherits it from the one starting it.
        self.spark.sparkContext.setLocalProperty("spark.scheduler.pool", spec.name)
        while True:
            try:
                for attempt in retrying(first_s=BACKOFF_FIRST_S, max_s=BACKOFF_MAX_S, stop=self._stop,
                                        on=QueryFailed, log=log, what=f"query {spec.name}"):
                    with attempt:
                        self._run(spec, state)
            except QueryFailed:
                return  # it failed as the runner stopped
            # Stopped, or the query ran long enough before it failed: a new series of restarts.
            if self._stop.wait(BACKOFF_FIRST_S):
                return

    def _run(self, spec: QuerySpec, state: QueryState) -> None:
        """Start the query and watch it: returns once the runner stops, or once the query failed after
        running BACKOFF_RESET_AFTER_S; raises QueryFailed when it failed sooner or could not start."""
        if self._stop.is_set():
            return
        started = time.monotonic()
        try:
            state.query = spec.start(self.spark, self.settings)
        except Exception as exc:  # noqa: BLE001 - e.g. Redis not up yet: retry like a failed query
            state.last_error = f"cannot start: {exc}"
        else:
            log.info("query %s started", state.query.name)
            next_look = 0.0
            while not self._stop.is_set() and state.query.isActive:
                if time.monotonic() >= next_look:
                    state.look(self.clock())  # for the stall watch, between health requests too
                    next_look = time.monotonic() + LOOK_S
                self._stop.wait(WATCH_S)  # supervision only; the data path is Spark's own
            if self._stop.is_set():
                _stop_query(state.query)
                return
            error = state.query.exception()
            state.last_error = str(error) if error else "query stopped"
        state.restarts += 1
        failure = (state.last_error or "").partition("\n")[0]
        if time.monotonic() - started < BACKOFF_RESET_AFTER_S:
            raise QueryFailed(failure)
        log.error("query %s failed, restarting from its checkpoint in %.0fs: %s", spec.name, BACKOFF_FIRST_S,
                  failure)


def _stop_query(query: StreamingQuery) -> None:
    try:
        query.stop()
    except Exception as exc:  # noqa: BLE001 - stopTimeout passed; stopping the session ends it
        log.warning("query %s did not stop in time: %s", query.name, str(exc).splitlines()[0])
    else:
        log.info("query %s stopped", query.name)


def serve_health(runner: JobRunner, host: str, port: int) -> ThreadingHTTPServer:
    """`GET /healthz` in a thread of its own: 200 when every query is active and none stalled, else 503;
    `GET /metrics`: the runner's Prometheus metrics (jobs/metrics.py)."""

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path == "/metrics":
                for state in runner.states.values():  # counts up to date at the scrape
                    state.look(runner.clock())
                body, content_type = exposition(runner.metrics.registry), CONTENT_TYPE_LATEST
                self.send_response(200)
            else:
                health = runner.health()
                body, content_type = json.dumps(health).encode(), "application/json"
                self.send_response(404 if self.path != "/healthz" else 200 if health["healthy"] else 503)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Health)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server


def run_job(specs: list[QuerySpec], *, app_name: str, description: str,
            preflight: Callable[[SparkSession, Settings], None] | None = None,
            adapt: Callable[[Settings], Settings] | None = None) -> None:
    """The main of a job process: the queries of `specs` in one Spark application until SIGTERM.

    `preflight(spark, settings)`, when given, runs once the session is built and before any query
    starts; an exception from it ends the process with its message (e.g. too few task slots);
    `adapt(settings)`, when given, makes the settings the application runs with (its own master, port)."""
    from jobs.spark import build_session
    from rtdash.logs import setup_logging

    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trigger-seconds", type=float, default=None,
                        help="micro-batch interval; 0 starts the next batch as soon as data is there "
                             "(default RTDASH_SPARK_TRIGGER_SECONDS)")
    args = parser.parse_args()
    setup_logging()
    settings = Settings()
    if adapt is not None:
        settings = adapt(settings)
    if args.trigger_seconds is not None:
        settings = settings.model_copy(update={"spark_trigger_seconds": args.trigger_seconds})
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    spark = build_session(settings, app_name)
    if preflight is not None:
        try:
            preflight(spark, settings)
        except Exception as exc:
            log.error("%s cannot start: %s", app_name, exc)
            spark.stop()
            raise SystemExit(1) from None
    runner = JobRunner(spark, settings, specs)
    health = serve_health(runner, settings.bind_host, settings.jobs_health_port)
    log.info("%s running queries %s; health on http://%s:%d/healthz", app_name,
             ", ".join(spec.name for spec in specs), settings.bind_host, settings.jobs_health_port)
    runner.start()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        runner.stop()
        health.shutdown()
        spark.stop()
        log.info("%s stopped", app_name)
