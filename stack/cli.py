"""The `rtdash` command: run the local stack, simulate traffic, inspect it.

    rtdash up                      start every service of the local stack and keep it running
    rtdash demo                    `up` plus simulated shoppers; dashboard at http://127.0.0.1:8888/
    rtdash down                    stop a stack started by `up`/`demo` in another terminal
    rtdash status                  health of each service of the local stack
    rtdash simulate payments       place orders and post their signed payment notifies at a rate
    rtdash simulate traffic        synthetic shoppers through the gateway
    rtdash drill                   kill each component under load (own stack, free ports), check the numbers
    rtdash keys demo               create the demo payment provider's key pair (never overwrites)
    rtdash token                   a token for the dashboard (last line), and the link that carries it
    rtdash cluster up|down|submit  a Spark standalone cluster on this machine, and the jobs submitted to it
    rtdash reconcile [--date D]    a day's live figures against a batch recomputation (exit 1 if they differ)

Settings come from RTDASH_* environment variables (see README).
"""
from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from rtdash.logs import setup_logging
from rtdash.settings import Settings

from .cli_cluster import cluster, status_lines as cluster_status_lines
from .cli_common import (console, private_key, report_line, settings_from_env,
                         start_supervised, stop_with_progress, wait_for_stop)
from .cli_reconcile import reconcile
from .cli_simulate import simulate
from .cli_token import dashboard_url, make_token, token

@click.group(help=__doc__.split("\n\n")[0])
@click.option("--log-level", default="INFO", show_default=True, help="Log level of the runner.")
def main(log_level: str) -> None:
    setup_logging(log_level)


main.add_command(simulate)
main.add_command(token)
main.add_command(cluster)
main.add_command(reconcile)


def _demo_keys(settings: Settings) -> None:
    """The demo provider's key pair, created if absent: the local stack runs the demo provider."""
    from rtdash.keys import KeyFileError, demo_keys

    try:
        written = demo_keys(settings)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from exc
    for path in written:
        console.print(f"created {path}", soft_wrap=True, markup=False, highlight=False)


def _start_stack(settings: Settings):
    from stack.runner import Stack
    from stack.services import local_stack

    _demo_keys(settings)
    try:                                  # before anything starts: a bad secret stops nothing half-way
        link = dashboard_url(settings, make_token(settings)[0])
    except ValueError as exc:
        raise click.ClickException(f"cannot make a dashboard token: {exc}") from exc
    stack = Stack(settings, local_stack(settings), supervise=True, report=report_line)
    start_supervised(stack, "local stack", "service")
    # The token rides in the fragment: browsers never send it, so no log or Referer holds it.
    console.print(f"dashboard: {link}", soft_wrap=True, markup=False, highlight=False)
    console.print("(the link opens the dashboard for 8 hours; `rtdash token` makes another)   "
                  "(Ctrl-C stops everything)", markup=False, highlight=False)
    return stack


def _say(*lines: str) -> None:
    """Print, unless the terminal is gone (closed after SIGHUP): stopping must go on regardless."""
    try:
        for line in lines:
            console.print(line)
    except OSError:
        pass


def _stop_stack(stack) -> None:
    stop_with_progress(stack, "local stack")
    _say("stopped")


@main.command()
def up() -> None:
    """Start the local stack (no simulated traffic) and run until Ctrl-C or `rtdash down`."""
    settings = settings_from_env()
    stop = wait_for_stop()
    stack = _start_stack(settings)
    try:
        stop.wait()
    finally:
        _stop_stack(stack)


@main.command()
@click.option("--rate", default=3.0, show_default=True, help="Shopper sessions per second through the gateway.")
@click.option("--users", default=300, show_default=True, help="Synthetic visitors.")
@click.option("--payments", default=0.0, show_default=True,
              help="Extra signed payment notifies per second, straight to the order service.")
def demo(rate: float, users: int, payments: float) -> None:
    """The local stack with simulated shoppers (and optionally payments): watch the dashboard live."""
    from producers.provider.simulator import PaymentSimulator
    from producers.traffic import TrafficConfig, TrafficSimulator

    settings = settings_from_env()
    stop = wait_for_stop()
    stack = _start_stack(settings)
    shoppers = TrafficSimulator(f"http://{settings.bind_host}:{settings.gateway_port}",
                                TrafficConfig(users=users, rate=rate, duration=10**9, seed=int(time.time())))
    payer = PaymentSimulator(settings, private_key(settings)) if payments > 0 else None

    async def run() -> None:
        tasks = [asyncio.create_task(shoppers.run())]
        if payer is not None:
            tasks.append(asyncio.create_task(payer.run(rate=payments, count=10**9)))
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        console.print(f"simulating {rate:g} shopper sessions/s through the gateway"
                      + (f" and {payments:g} payments/s" if payer else "") + "; Ctrl-C stops")
        asyncio.run(run())
    finally:
        try:
            _say(shoppers.report.summary())
            if payer is not None:
                payer.close()
                _say(payer.report.summary())
        finally:
            _stop_stack(stack)


@main.command()
def down() -> None:
    """Stop the stack that `rtdash up` or `rtdash demo` started."""
    from stack.state import stop_running_stack

    stopped = stop_running_stack(settings_from_env())
    console.print("stopped " + ", ".join(stopped) if stopped else "no stack running")


@main.command()
def status() -> None:
    """Show each service of the local stack, how often it was restarted and whether it answers its health check."""
    from stack.processes import same_process
    from stack.state import read_state
    from stack.services import local_stack

    settings = settings_from_env()
    state = read_state(settings) or {}
    services = state.get("services") or {}
    table = Table(title="rtdash local stack")
    for col in ("service", "pid", "address", "restarts", "health"):
        table.add_column(col)
    all_ok = True
    for service in local_stack(settings):
        info = services.get(service.name, {})
        ok = service.health()
        all_ok &= ok
        # A pid is shown only while it is still the process the runner started (same start time).
        pid = info.get("pid")
        table.add_row(service.name, str(pid) if same_process(pid, info.get("started")) else "-", service.address,
                      str(info.get("restarts", 0)) if info else "-",
                      "[green]healthy[/]" if ok else "[red]down[/]")
    console.print(table)
    for line in cluster_status_lines(settings):   # the cluster is optional: not part of the exit status
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    raise SystemExit(0 if all_ok else 1)


@main.group()
def keys() -> None:
    """The payment provider's key files."""


@keys.command("demo")
def keys_demo() -> None:
    """Create the demo provider's key pair where it is missing; an existing key is never replaced.

    The private key (mode 0600, in a 0700 directory) is for the demo provider and
    the payment simulator; the order service reads only the public key. A real
    deployment installs the provider's public key instead and runs no demo provider.
    """
    settings = settings_from_env()
    _demo_keys(settings)
    console.print(f"demo provider keys: private {settings.provider_private_key_path}, "
                  f"public {settings.provider_public_key_path}", soft_wrap=True, markup=False, highlight=False)


@main.command()
@click.option("--rate", type=float, default=20.0, show_default=True, help="New paid notifies per second.")
@click.option("--duplicate-share", type=float, default=0.1, show_default=True, help="Share of notifies re-sent.")
@click.option("--seconds", type=float, default=20.0, show_default=True, help="Seconds of load before each fault.")
@click.option("--down", type=float, default=5.0, show_default=True,
              help="Seconds a killed component stays down (the load goes on) before its restart.")
@click.option("--traffic-rate", type=float, default=1.0, show_default=True,
              help="Shopper sessions per second through the gateway (0: none).")
@click.option("--faults", default=None,
              help="Components to kill, in order, comma list. Default: order_service, kafka, redis, spark_jobs, "
                   "push_server, notifier; in the real-time orders mode also orders_realtime and orders_applier "
                   "after spark_jobs.")
@click.option("--recovery-timeout", type=float, default=180.0, show_default=True,
              help="Seconds to wait for the numbers after a component is back.")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path),
              help="RTDASH_HOME of the drill's own stack (default: a new temporary one, removed afterwards).")
@click.option("--keep", is_flag=True, help="Keep the temporary home (logs, databases) and print where it is.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the table as Markdown to this file.")
def drill(rate: float, duplicate_share: float, seconds: float, down: float, traffic_rate: float, faults: str | None,
          recovery_timeout: float, home: Path | None, keep: bool, markdown_path: Path | None) -> None:
    """The fault drill: a stack of its own on free ports; each component SIGKILLed under load and restarted;
    the dashboard's numbers checked against the order database after each. Exit 1 if any check fails."""
    from stack.drill import RECOVERY_TARGET_S, DrillPlan, default_faults, drill_settings, run_drill
    from stack.drill_report import markdown, rich_table
    from stack.runner import StackError

    plan = DrillPlan(rate=rate, duplicate_share=duplicate_share, seconds=seconds, down=down, traffic_rate=traffic_rate,
                     faults=default_faults(Settings()) if faults is None
                     else tuple(f.strip() for f in faults.split(",") if f.strip()), recovery_timeout=recovery_timeout)
    try:
        plan.check()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    temporary = home is None
    home = Path(tempfile.mkdtemp(prefix="rtdash-drill-")) if temporary else home
    # SIGTERM and a closed terminal end the drill as Ctrl-C does: the stack is stopped on the way out.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)
    started = datetime.now(timezone.utc)
    try:
        with console.status("fault drill") as status:
            report = run_drill(plan, drill_settings(home, settings_from_env()), on_step=lambda msg: (status.update(msg),
                                                                                             console.log(msg)))
    except StackError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if temporary and not keep:
            shutil.rmtree(home, ignore_errors=True)
        else:
            console.print(f"home (logs, databases): {home}")
    title = (f"fault drill, {started:%Y-%m-%d %H:%M} UTC: {rate:g} notifies/s ({duplicate_share:.0%} duplicates), "
             f"{seconds:g} s load, {down:g} s down")
    # Written to a file or a pipe, the table gets the width it needs rather than rich's 80 columns.
    (console if console.is_terminal else Console(width=160)).print(rich_table(report.results, RECOVERY_TARGET_S, title))
    for line in report.summary:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if markdown_path is not None:
        markdown_path.write_text(f"{title}\n\n{markdown(report.results, RECOVERY_TARGET_S)}\n\n"
                                 + "".join(f"- {line}\n" for line in report.summary))
    raise SystemExit(0 if report.ok else 1)
