"""`rtdash cluster up|down|submit|package`: a Spark standalone cluster on this machine, and jobs submitted to it.

    rtdash cluster up              master + RTDASH_SPARK_WORKERS workers (from pyspark), until Ctrl-C or `down`
    rtdash cluster down            stop the cluster `up` started in another terminal
    rtdash cluster submit JOB      spark-submit JOB (all, orders, orders_realtime, traffic, alerts), until Ctrl-C
    rtdash cluster package         the zip of rtdash/ and jobs/ that submit gives spark-submit's --py-files

The process logic lives in stack/cluster.py; `rtdash status` shows the master and its applications.
"""
from __future__ import annotations

from pathlib import Path

import click

from rtdash.settings import Settings

from .cli_common import (console, report_line, settings_from_env,
                         start_supervised, stop_with_progress, wait_for_stop)


def _say(line: str) -> None:
    console.print(line, markup=False, highlight=False, soft_wrap=True)


@click.group()
def cluster() -> None:
    """A Spark standalone cluster on this machine (master and workers from pyspark) and jobs submitted to it."""


@cluster.command("up")
def cluster_up() -> None:
    """Start the master and the workers, every one on RTDASH_BIND_HOST; run until Ctrl-C or `rtdash cluster down`."""
    from .cluster import cluster_services, cluster_settings, master_ui, master_url
    from .runner import Stack

    settings = settings_from_env()
    stop = wait_for_stop()
    services = cluster_services(settings)
    runner = Stack(cluster_settings(settings), services, supervise=True, report=report_line)
    start_supervised(runner, "Spark cluster", "process")
    _say(f"master {master_url(settings)}, web UI {master_ui(settings)}; submit with `rtdash cluster submit all` "
         "(Ctrl-C stops the cluster)")
    try:
        stop.wait()
    finally:
        stop_with_progress(runner, "Spark cluster")


@cluster.command("down")
def cluster_down() -> None:
    """Stop the cluster that `rtdash cluster up` started (its applications' executors with it)."""
    from .cluster import cluster_settings
    from .state import stop_running_stack

    stopped = stop_running_stack(cluster_settings(settings_from_env()))
    console.print("stopped " + ", ".join(stopped) if stopped else "no cluster running")


@cluster.command("package")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the zip (default <home>/cluster/rtdash-jobs.zip).")
def cluster_package(output: Path | None) -> None:
    """Zip rtdash/ and jobs/ for spark-submit's --py-files (`submit` does this itself)."""
    from .cluster import package_zip

    settings = settings_from_env()
    _say(str(package_zip(output or default_package(settings))))


def default_package(settings: Settings) -> Path:
    return (settings.home / "cluster" / "rtdash-jobs.zip").resolve()


@cluster.command("submit")
@click.argument("job", type=click.Choice(["all", "orders", "orders_realtime", "traffic", "alerts"]))
@click.option("--cores", type=int, help="Cores the application takes at most (spark.cores.max; default: all free).")
@click.option("--conf", "confs", multiple=True, metavar="KEY=VALUE", help="More Spark configuration (repeatable).")
@click.option("--print-only", is_flag=True, help="Print the spark-submit command line (its driver gets this "
                                                  "environment's RTDASH_* settings); run nothing.")
def cluster_submit(job: str, cores: int | None, confs: tuple[str, ...], print_only: bool) -> None:
    """Submit JOB to the cluster with spark-submit (client mode) and run it until Ctrl-C.

    `all` is the queries of `python -m jobs` in one application (RTDASH_ORDERS_MODE says whether the orders
    job is among them); `orders` is the micro-batch orders job, `orders_realtime` the real-time-mode orders
    query, whose rows the orders applier (`python -m jobs.orders_applier`, not a Spark job) puts in Redis.
    The driver's health is http://RTDASH_BIND_HOST:RTDASH_JOBS_HEALTH_PORT/healthz
    (RTDASH_ORDERS_REALTIME_HEALTH_PORT for orders_realtime): a second application here needs another port.
    """
    import shlex

    from .cluster import health_port, master_json, master_url, package_zip, submit_argv, submit_service
    from .probes import port_open
    from .runner import StackError

    settings = settings_from_env()
    conf = {}
    for item in confs:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise click.UsageError(f"--conf {item!r}: use KEY=VALUE")
        conf[key] = value
    package = default_package(settings)
    if print_only:
        _say(shlex.join(submit_argv(settings, job, package, cores=cores, conf=conf)))
        return
    if master_json(settings) is None:
        raise click.ClickException(f"no Spark master answers at {master_url(settings)}: `rtdash cluster up` first")
    port = health_port(settings, job)
    if port_open(settings.bind_host, port):
        raise click.ClickException(
            f"port {port} is taken (the local stack runs these queries?): stop it, or give this application its "
            "own health port, RTDASH_HOME and RTDASH_REDIS_PREFIX")
    package_zip(package)
    stop = wait_for_stop()
    service = submit_service(settings, job, package, cores=cores, conf=conf)
    try:
        with console.status(f"submitting {job} to {master_url(settings)}"):
            service.start_ready()
    except StackError as exc:
        raise click.ClickException(str(exc)) from exc
    _say(f"{job}: running on {master_url(settings)}; health {service.address}/healthz, log {service.log_path} "
         "(Ctrl-C stops it)")
    try:
        while not stop.wait(1.0):
            if service.ended() is not None:
                raise click.ClickException(f"{job} ended ({service.ended()}); see {service.log_path}")
    finally:
        service.stop()


def status_lines(settings: Settings) -> list[str]:
    """What `rtdash status` says of the cluster: the master's address and UI, its workers, the running
    applications; one line when no master answers."""
    from .cluster import applications, master_json, master_ui, master_url

    state = master_json(settings)
    if state is None:
        return [f"spark cluster: no master at {master_ui(settings)} (`rtdash cluster up` starts one)"]
    workers = [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]
    lines = [f"spark cluster: master {master_url(settings)} ({state.get('status')}), web UI {master_ui(settings)}, "
             f"{len(workers)} workers alive, cores {state.get('coresused', 0)}/{state.get('cores', 0)} in use"]
    apps = applications(state)
    lines += [f"  application {a['name']} ({a['id']}): {a['state']}, {a['cores']} cores, "
              f"{a['memory_per_executor_mb']} MB per executor, running {a['seconds']} s" for a in apps]
    if not apps:
        lines.append("  no application running")
    return lines
