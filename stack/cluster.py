"""A Spark standalone cluster on this machine, and the jobs submitted to it as on any cluster.

`rtdash cluster up` runs a master and RTDASH_SPARK_WORKERS workers from the pyspark
installation itself (`spark-class org.apache.spark.deploy.master.Master` / `...worker.Worker`
under pyspark's own SPARK_HOME, nothing downloaded), through the stack runner: each in its
own process group with its log in <home>/logs, started in order and healthy once the master's
JSON (`/json/`) says ALIVE and lists the worker ALIVE, stopped in reverse order. The runner's
state file is the cluster's own, <home>/cluster/run/stack.json (`cluster_settings`), so
`rtdash down` and `rtdash cluster down` each stop only what their `up` started.

Every process binds to and advertises RTDASH_BIND_HOST (127.0.0.1 by default): `--host`
and SPARK_LOCAL_IP for the daemons, and the executors a worker starts inherit both, since
by default a Spark process advertises whatever interface the hostname resolves to. The
master's REST submission server is off (jobs go through spark-submit's client mode), and a
taken port fails the start instead of moving Spark to the next free one.

A job goes to the cluster as it would to a cluster at work (`submit_argv`): spark-submit
in client mode with `--master spark://host:port`, the connector jars from .jars/spark by
`--jars`, the project's packages zipped by `--py-files` (`package_zip`), the settings as
RTDASH_* variables of the driver, and the checkpoints under RTDASH_HOME, which every executor
and the driver reach on one machine; a cluster of several machines needs them on shared
storage (HDFS or an S3-compatible store; README "Running the jobs on a Spark cluster").
"""
from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from jobs.spark import DRIVER_JAVA_OPTIONS, connector_jars
from rtdash.settings import PROJECT_ROOT, Settings

from .runner import Service, StackError

# What `rtdash cluster submit` runs: the job name -> the job's file (its main), relative to jobs/. `all` is
# `python -m jobs` (the queries of RTDASH_ORDERS_MODE in one application), `orders` the micro-batch orders
# job, `orders_realtime` the real-time-mode orders query (its rows applied by the orders applier).
JOBS = {"all": "__main__.py", "orders": "orders.py", "orders_realtime": "orders_realtime.py",
        "traffic": "traffic.py", "alerts": "alerts.py"}
# The packages the zip for --py-files carries: what the jobs import, on the driver and on executors.
PACKAGES = ("rtdash", "jobs")
# Heap of the master and worker daemons (Spark's default is 1g each): they only schedule.
DAEMON_MEMORY = "256m"


def spark_home() -> Path:
    """The pyspark installation, which is a Spark distribution: bin/spark-class, bin/spark-submit, jars/."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def master_url(settings: Settings) -> str:
    return f"spark://{settings.bind_host}:{settings.spark_cluster_port}"


def master_ui(settings: Settings) -> str:
    return f"http://{settings.bind_host}:{settings.spark_cluster_ui_port}"


def worker_ui(settings: Settings, index: int) -> str | None:
    """Worker `index`'s web UI; None when RTDASH_SPARK_WORKER_UI_PORT is 0 (each worker takes a free port)."""
    if settings.spark_worker_ui_port == 0:
        return None
    return f"http://{settings.bind_host}:{settings.spark_worker_ui_port + index}"


def cluster_settings(settings: Settings) -> Settings:
    """`settings` with the runner's state file moved to <home>/cluster/run/stack.json (logs stay in <home>/logs)."""
    return settings.model_copy(update={"home": settings.home / "cluster"})


def master_json(settings: Settings, timeout: float = 2.0) -> dict | None:
    """The master's state (`GET /json/`: status, workers, active and completed applications); None when it
    does not answer."""
    try:
        with urllib.request.urlopen(master_ui(settings) + "/json/", timeout=timeout) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


def spark_env(settings: Settings) -> dict[str, str]:
    """Environment of every Spark process of the cluster: pyspark's SPARK_HOME, the loopback, small daemons."""
    host = settings.bind_host
    return {
        "SPARK_HOME": str(spark_home()),
        "SPARK_LOCAL_IP": host,            # what the daemons and their executors bind to ...
        "SPARK_LOCAL_HOSTNAME": host,      # ... and advertise, not the hostname's other interface
        "SPARK_NO_DAEMONIZE": "1",
        "SPARK_DAEMON_MEMORY": DAEMON_MEMORY,
        "SPARK_LOG_DIR": str((settings.logs_dir).resolve()),
        # A port in use is an error, not a silent move to the next one the health checks do not know.
        "SPARK_DAEMON_JAVA_OPTS": "-Dspark.port.maxRetries=0",
        # Jobs are submitted by spark-submit in client mode: no REST submission server on port 6066.
        "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
        # Executors' Python workers (if a job ever needs them) run the project's interpreter.
        "PYSPARK_PYTHON": sys.executable,
    }


def _spark_class(settings: Settings) -> str:
    script = spark_home() / "bin" / "spark-class"
    if not script.exists():
        raise StackError(f"{script} not found: pyspark is not installed in {sys.prefix} (run `make setup`)")
    return str(script)


def master_service(settings: Settings) -> Service:
    """The master on spark_cluster_port, its web UI (and /json/) on spark_cluster_ui_port."""
    argv = [_spark_class(settings), "org.apache.spark.deploy.master.Master", "--host", settings.bind_host,
            "--port", str(settings.spark_cluster_port), "--webui-port", str(settings.spark_cluster_ui_port)]
    return Service("spark_master", argv, settings.logs_dir / "spark_master.log", env=spark_env(settings),
                   health=lambda: (master_json(settings) or {}).get("status") == "ALIVE",
                   address=master_url(settings), ready_timeout=90)


def worker_service(settings: Settings, index: int) -> Service:
    """Worker `index` (0-based): spark_worker_cores and spark_worker_memory for executors, its UI at
    spark_worker_ui_port + index (any free port when that is 0), its executors' files in
    <home>/cluster/work/worker-<n>; healthy once the master lists it ALIVE (with a UI port of 0, once it
    lists index + 1 workers ALIVE: the workers start one after the other)."""
    name = f"spark_worker_{index + 1}"
    ui = worker_ui(settings, index)
    work = (settings.home / "cluster" / "work" / f"worker-{index + 1}").resolve()
    argv = [_spark_class(settings), "org.apache.spark.deploy.worker.Worker", "--host", settings.bind_host,
            "--webui-port", str(settings.spark_worker_ui_port + index if ui else 0),
            "--cores", str(settings.spark_worker_cores), "--memory", settings.spark_worker_memory,
            "--work-dir", str(work), master_url(settings)]

    def registered() -> bool:
        alive = [w for w in (master_json(settings) or {}).get("workers", []) if w.get("state") == "ALIVE"]
        return any(w.get("webuiaddress") == ui for w in alive) if ui else len(alive) > index

    return Service(name, argv, settings.logs_dir / f"{name}.log", env=spark_env(settings), health=registered,
                   prepare=lambda: work.mkdir(parents=True, exist_ok=True), address=ui or "", ready_timeout=90)


def cluster_services(settings: Settings) -> list[Service]:
    """The master, then each worker: what `rtdash cluster up` starts, in order."""
    return [master_service(settings), *(worker_service(settings, i) for i in range(settings.spark_workers))]


def package_zip(destination: Path) -> Path:
    """The project's packages the jobs import (rtdash/, jobs/: modules, Lua scripts, the scheduler pools) in one
    zip for spark-submit's --py-files: Python imports it straight from the zip, on the driver and on executors."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for package in PACKAGES:
            for path in sorted((PROJECT_ROOT / package).rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                    archive.write(path, path.relative_to(PROJECT_ROOT).as_posix())
    partial.replace(destination)
    return destination


def submit_argv(settings: Settings, job: str, package: Path, *, cores: int | None = None,
                conf: dict[str, str] | None = None) -> list[str]:
    """spark-submit of `job` (a key of JOBS) to the cluster in client mode: the driver runs here, executors on
    the workers; `cores` caps the application's cores (spark.cores.max; default: every free core)."""
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r} (one of {', '.join(JOBS)})")
    host = settings.bind_host
    options = {
        "spark.driver.host": host, "spark.driver.bindAddress": host,
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.driver.extraJavaOptions": DRIVER_JAVA_OPTIONS,   # a query's stop in foreachBatch (jobs/spark.py)
        "spark.executor.memory": settings.spark_executor_memory,
        "spark.executor.cores": str(settings.spark_worker_cores),
        "spark.pyspark.python": sys.executable,
        **({"spark.cores.max": str(cores)} if cores else {}),
        **(conf or {}),
    }
    argv = [str(spark_home() / "bin" / "spark-submit"), "--master", master_url(settings), "--deploy-mode", "client",
            "--name", f"rtdash-{job}", "--jars", ",".join(connector_jars(settings.jars)), "--py-files", str(package)]
    for key, value in options.items():
        argv += ["--conf", f"{key}={value}"]
    return argv + [str(PROJECT_ROOT / "jobs" / JOBS[job])]


def submit_env(settings: Settings) -> dict[str, str]:
    """The driver's environment: the settings as RTDASH_* variables, pyspark's SPARK_HOME, the loopback."""
    return settings.child_env() | {"SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": settings.bind_host,
                                   "PYSPARK_PYTHON": sys.executable, "PYTHONUNBUFFERED": "1"}


def health_port(settings: Settings, job: str) -> int:
    """Where the submitted `job` serves /healthz: the real-time orders query has a port of its own."""
    return settings.orders_realtime_health_port if job == "orders_realtime" else settings.jobs_health_port


def jobs_health(settings: Settings, job: str = "all") -> dict | None:
    """The submitted application's /healthz (its queries), None while it does not answer."""
    url = f"http://{settings.bind_host}:{health_port(settings, job)}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:   # 503: starting or stalled, with the reason
        try:
            return json.loads(err.read())
        except ValueError:
            return None
    except (OSError, ValueError):
        return None


def submit_service(settings: Settings, job: str, package: Path, *, cores: int | None = None,
                   conf: dict[str, str] | None = None, ready_timeout: float = 240) -> Service:
    """The submitted job as a Service of the runner: healthy once every query of its /healthz is active."""
    return Service(f"spark_submit_{job}", submit_argv(settings, job, package, cores=cores, conf=conf),
                   settings.logs_dir / f"spark_submit_{job}.log", env=submit_env(settings),
                   health=lambda: bool((jobs_health(settings, job) or {}).get("active")),
                   address=f"http://{settings.bind_host}:{health_port(settings, job)}",
                   ready_timeout=ready_timeout, stop_timeout=40)


def applications(state: dict | None) -> list[dict]:
    """The master's running applications: id, name, cores, memory per executor, state, seconds running."""
    return [{"id": app.get("id"), "name": app.get("name"), "cores": app.get("cores"),
             "memory_per_executor_mb": app.get("memoryperexecutor"), "state": app.get("state"),
             "seconds": round((app.get("duration") or 0) / 1000)}
            for app in (state or {}).get("activeapps", [])]
