"""`rtdash simulate payments|traffic`: load for a running stack, with progress and a report at the end."""
from __future__ import annotations

import asyncio
import logging

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .cli_common import console, private_key, settings_from_env


@click.group()
def simulate() -> None:
    """Simulated traffic."""


@simulate.command("payments")
@click.option("--rate", type=float, default=10.0, show_default=True, help="Notifies per second.")
@click.option("--duration", type=float, help="Seconds to run (or give --count).")
@click.option("--count", type=int, help="Number of notifies to send.")
@click.option("--duplicate-share", default=0.05, show_default=True, help="Share of notifies re-sent.")
@click.option("--seed", type=int, help="Random seed, for reproducible amounts.")
@click.option("--url", help="Notify URL (default: the local order service).")
def simulate_payments(rate: float, duration: float | None, count: int | None, duplicate_share: float,
                      seed: int | None, url: str | None) -> None:
    """Act as the shop and the payment provider: place orders, sign and post their notifies, report what was accepted."""
    from producers.provider.simulator import PaymentSimulator

    if (duration is None) == (count is None):
        raise click.UsageError("give exactly one of --duration and --count")
    if rate <= 0:
        raise click.UsageError("--rate must be positive")
    settings = settings_from_env()
    key = private_key(settings)
    try:
        simulator = PaymentSimulator(settings, key, url=url, duplicate_share=duplicate_share, seed=seed)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    columns = (TextColumn("notifies"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("send", total=count or int(rate * duration))
        report = asyncio.run(simulator.run(rate=rate, count=count, duration=duration,
                                           on_tick=lambda done, _total: progress.update(bar, completed=done)))
    simulator.close()
    console.print(report.summary())
    logging.getLogger("rtdash.simulate").info(report.summary())
    if report.errors:
        raise SystemExit(1)


@simulate.command("traffic")
@click.option("--users", type=int, default=200, show_default=True, help="Synthetic visitors.")
@click.option("--rate", type=float, default=5.0, show_default=True, help="Sessions per second (Poisson mean).")
@click.option("--duration", type=float, default=60.0, show_default=True, help="Seconds of arrivals.")
@click.option("--seed", type=int, default=7, show_default=True, help="Random seed: same seed, same sessions.")
@click.option("--logged-in-share", type=float, default=0.3, show_default=True, help="Visitors who log in.")
@click.option("--bot-share", type=float, default=0.05, show_default=True, help="Sessions that are crawlers.")
@click.option("--funnel", default="0.8,0.3,0.6", show_default=True,
              help="Stage probabilities search->view, view->cart, cart->pay.")
@click.option("--think-time", type=float, default=0.2, show_default=True, help="Mean pause between requests (s).")
@click.option("--daily-curve/--flat", default=False, show_default=True,
              help="Shape the rate by time of day (quiet at night, busiest in the evening).")
@click.option("--url", help="Where to send traffic (default: the local gateway).")
def simulate_traffic(users: int, rate: float, duration: float, seed: int, logged_in_share: float,
                     bot_share: float, funnel: str, think_time: float, daily_curve: bool, url: str | None) -> None:
    """Synthetic shoppers through the gateway: search, view, cart and pay, with bots and logins."""
    from producers.traffic import TrafficConfig, TrafficSimulator

    try:
        view_rate, cart_rate, pay_rate = (float(x) for x in funnel.split(","))
    except ValueError as exc:
        raise click.UsageError("--funnel takes three probabilities, e.g. 0.8,0.3,0.6") from exc
    settings = settings_from_env()
    config = TrafficConfig(users=users, rate=rate, duration=duration, seed=seed, logged_in_share=logged_in_share,
                           bot_share=bot_share, view_rate=view_rate, cart_rate=cart_rate, pay_rate=pay_rate,
                           think_time=think_time, daily_curve=daily_curve)
    try:
        simulator = TrafficSimulator(url or f"http://{settings.bind_host}:{settings.gateway_port}", config)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
               TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("traffic", total=duration, status="")

        def tick(at: float, report) -> None:
            progress.update(bar, completed=at, status=f"{report.sessions} sessions, "
                                                      f"{sum(report.requests.values())} requests, "
                                                      f"{len(report.orders)} orders")

        report = asyncio.run(simulator.run(on_tick=tick))
        progress.update(bar, completed=duration)
    console.print(report.summary())
    if report.errors:
        raise SystemExit(1)
