"""One logging format for every rtdash process: one line per notable event."""
from __future__ import annotations

import logging
import os


def setup_logging(level: str | None = None) -> None:
    # The format uses none of these, and collecting them costs time on every record (the
    # logging HOWTO's "Optimization" section): the order service logs each paid order.
    logging._srcfile = None  # type: ignore[attr-defined]  # no caller file/line lookup
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.basicConfig(
        level=(level or os.environ.get("RTDASH_LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("kafka", "py4j", "tornado.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
