"""One logging format for every rtdash process: one line per notable event.

A request that tornado rejects as malformed is one such event: tornado reports
the ones it rejects while reading them ("Malformed HTTP message from ...") in one
line, and `OneLineRejects` makes one line of its other reports of HTTPInputError
too (a handler that parses a bad body itself: "Uncaught exception" with a
traceback), so that a client sending garbage cannot fill the log with a
traceback per request.
"""
from __future__ import annotations

import logging
import os

from tornado.httputil import HTTPInputError

TORNADO_LOGGERS = ("tornado.general", "tornado.application", "tornado.access")


class OneLineRejects(logging.Filter):
    """Drops the traceback of a record about a malformed request, keeping what was wrong in its one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HTTPInputError):
            record.msg = f"{record.getMessage().splitlines()[0]}: malformed request: {exc}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def setup_logging(level: str | None = None) -> None:
    """Log to stderr at `level` (else RTDASH_LOG_LEVEL, else INFO); chatty libraries at WARNING."""
    logging.basicConfig(
        level=(level or os.environ.get("RTDASH_LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("kafka", "py4j", "tornado.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in TORNADO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, OneLineRejects) for f in logger.filters):
            logger.addFilter(OneLineRejects())
