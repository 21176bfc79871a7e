"""The fault drill's report: one row per phase, as a rich table for the terminal and as Markdown.

Columns: the fault; *down*, from the SIGKILL to the health check answering
again (the `down` pause plus the restart); *recovered*, from then to the first
reading at a quiescent point where every check holds (for the baseline, from
the end of its load); the database's orders and amount of the day shown; then
one column per check, ``0`` when the dashboard equals the database, else how
it differs: *today* (``orders.today``), *per minute* (``orders.per_minute``,
minute by minute and summed), *WebSocket* (a connected dashboard against
Redis), *lost* (acknowledged to the payer, missing from the database), *SMS*
(one message per stored order); *result* is ok when every difference is zero
and the recovery took at most the target; else DIFFERENCE (at the last reading,
after the recovery timeout), never back (the component did not restart), not
quiescent (notifies or sessions still under way at the timeout), or over the
target.
"""
from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table

from rtdash.payments import format_amount

HEADERS = ("fault", "down s", "recovered s", "orders", "amount (yuan)", "today", "per minute", "WebSocket", "lost",
           "SMS", "result")
NUMBERS = {"down s", "recovered s", "orders", "amount (yuan)"}   # right-aligned


def _seconds(value: float | None, missing: str) -> str:
    return f"{value:.1f}" if value is not None else missing


def rows(results: Iterable, target_s: float) -> list[list[str]]:
    """One row of HEADERS per PhaseResult."""
    table = []
    for r in results:
        verdict = ("ok" if r.ok else "DIFFERENCE" if any(r.differences.values()) else "never back"
                   if r.down_s is None and r.fault != "none" else "not quiescent" if r.recovery_s is None
                   else f"over {target_s:g} s")
        table.append([r.fault, _seconds(r.down_s, "-" if r.fault == "none" else "never back"),
                      _seconds(r.recovery_s, "never"), str(r.orders), format_amount(r.amount_cents),
                      *(r.differences[check] or "0" for check in ("today", "per_minute", "websocket", "lost", "sms")),
                      verdict])
    return table


def rich_table(results: Iterable, target_s: float, title: str) -> Table:
    table = Table(title=title)
    for header in HEADERS:
        table.add_column(header, justify="right" if header in NUMBERS else "left")
    for row in rows(results, target_s):
        style = "green" if row[-1] == "ok" else "red"
        table.add_row(*row[:-1], f"[{style}]{row[-1]}[/]")
    return table


def markdown(results: Iterable, target_s: float) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |",
             "| " + " | ".join("---:" if h in NUMBERS else "---" for h in HEADERS) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows(results, target_s)]
    return "\n".join(lines)
