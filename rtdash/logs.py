"""One logging format for every rtdash process: one line per notable event."""
from __future__ import annotations

import logging
import os


def setup_logging(level: str | None = None) -> None:
    """Log to stderr at `level` (else RTDASH_LOG_LEVEL, else INFO); chatty libraries at WARNING."""
    logging.basicConfig(
        level=(level or os.environ.get("RTDASH_LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("kafka", "py4j", "tornado.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
