"""`rtdash reconcile`: one day's live dashboard figures against a batch recomputation, as a table.

The recomputation is jobs/reconcile.py (batch Spark over the topics, and the
order database); this command builds the SparkSession from the settings
(local mode by default, RTDASH_SPARK_MASTER for a cluster), prints one row per
figure (figure, live, batch, difference, agrees) and the offset ranges it
read, and exits 0 when every figure agrees (unique counts within 2%), 1 when
one does not, 2 when it cannot compare (a bad option; Kafka, Redis or the order
database not reachable, a topic missing).
"""
from __future__ import annotations

from datetime import date

import click
from rich.console import Console
from rich.table import Table

from .cli_common import console, settings_from_env


class CannotCompare(click.ClickException):
    """A part the comparison reads is not there: exit 2, not 1 (which says the figures differ)."""

    exit_code = 2


def verdict(figure) -> str:
    if not figure.ok:
        return "[red]no[/]"
    return "yes" if figure.difference in (0, None) or figure.differing is not None else "within 2%"


def show(value) -> str:
    return "-" if value is None else f"{value:,}"


def table(result) -> Table:
    """The comparison as a rich table: one row per figure, the differing ones in red."""
    out = Table(title=f"reconcile {result.day}: live = Redis snapshots, batch = topics and order database")
    for column, justify in (("figure", "left"), ("live", "right"), ("batch", "right"), ("difference", "right"),
                            ("agrees", "left")):
        out.add_column(column, justify=justify)
    for figure in result.figures:
        difference = figure.difference
        shown = (f"{difference} differ" if figure.differing is not None and difference is not None
                 else "-" if difference is None else f"{difference:+,}" if difference else "0")
        out.add_row(figure.name, show(figure.live), show(figure.batch), shown, verdict(figure),
                    style=None if figure.ok else "red")
    return out


@click.command()
@click.option("--date", "day", metavar="YYYY-MM-DD",
              help="The day to reconcile, in RTDASH_TIMEZONE (default: today there, the dashboard's day).")
@click.option("--settle", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds to keep reading while the live figures catch up with the topics.")
def reconcile(day: str | None, settle: float) -> None:
    """Recompute a day's figures in batch from the topics and the order database, compare them with the
    dashboard's (Redis), print the table; exit 1 if any differs beyond the documented error."""
    import redis
    from kafka.errors import KafkaError
    from sqlalchemy.exc import SQLAlchemyError

    from jobs.reconcile import check_sources, reconcile as run, today
    from jobs.spark import build_session

    settings = settings_from_env()
    try:
        day = date.fromisoformat(day).isoformat() if day else today(settings)
    except ValueError as exc:
        raise click.BadParameter(f"{day!r} is not a date such as 2026-11-30", param_hint="--date") from exc
    unreachable = (LookupError, KafkaError, redis.RedisError, SQLAlchemyError)
    try:
        check_sources(settings)
        with console.status(f"recomputing {day} in batch Spark"):
            spark = build_session(settings, "rtdash-reconcile")
            try:
                result = run(spark, settings, day, settle_seconds=settle)
            finally:
                spark.stop()
    except unreachable as exc:
        raise CannotCompare(f"cannot reconcile {day}: {type(exc).__name__}: {exc}") from exc
    # Written to a file or a pipe, the table gets the width it needs rather than rich's 80 columns.
    (console if console.is_terminal else Console(width=160)).print(table(result))
    for line in result.notes:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    wrong = result.differing
    console.print("every figure agrees" if not wrong else
                  "differs: " + ", ".join(f.name for f in wrong), markup=False, highlight=False, soft_wrap=True)
    raise SystemExit(0 if result.ok else 1)
