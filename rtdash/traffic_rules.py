"""What a request means to the dashboard: bots, page views, visitors, searches.

The definitions of DESIGN.md ("Traffic analytics channels"), written once.
The traffic job (jobs/traffic_events.py) applies them as Spark expressions on the
JVM; the Python functions here are the same rules for one event, used by the
gateway (its ``bot`` flag) and by the tests that recompute every figure from
an event log. Change a rule here and in `jobs/traffic_events.py` together: the
end-to-end test compares the two on the same log.

* bot request: the lower-cased User-Agent contains one of BOT_WORDS, or the
  event's ``bot`` flag is set. Bots count in ``bot_requests`` only.
* page view: a non-bot GET answered 2xx or 3xx, outside the order center
  (payment notifies are not page views).
* visitor: a distinct ``visitor_id`` among page views; logged-in user: a
  distinct non-null ``user_id`` among non-bot requests answered below 400.
* search: a page view with a non-empty normalised ``search_term`` (Unicode
  NFKC, case-folded, trimmed, inner whitespace collapsed to one space).
"""
from __future__ import annotations

import re
import unicodedata

# DESIGN.md's bot|crawl|spider|slurp (case-insensitive), as words of the lower-cased User-Agent:
# the traffic job checks them the same way with Spark's lower and contains, without a regex.
BOT_WORDS = ("bot", "crawl", "spider", "slurp")
# The order center's route (payment notifies); its requests are never page views.
ORDER_CENTER_PREFIX = "/order_center/"

_SPACE = re.compile(r"\s+")


def is_bot(user_agent: str | None, flagged: bool | None = None) -> bool:
    if flagged:
        return True
    agent = (user_agent or "").lower()
    return any(word in agent for word in BOT_WORDS)


def is_page_view(method: str, status: int, path: str, bot: bool) -> bool:
    return not bot and method == "GET" and 200 <= status < 400 and not path.startswith(ORDER_CENTER_PREFIX)


def normalise_search_term(term: str | None) -> str | None:
    """NFKC, case fold, trim, collapse whitespace; None for a missing or blank term."""
    if term is None:
        return None
    text = _SPACE.sub(" ", unicodedata.normalize("NFKC", term).casefold()).strip()
    return text or None
