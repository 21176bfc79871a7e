"""The SQLAlchemy engine every rtdash database uses (the order service's, the shop's).

SQLite, the default, runs in WAL mode so that readers never block the one
writer, with full durability (``synchronous=FULL``): a commit is on disk
before it returns, so a notify answered ``success`` survives an OS crash or
a power cut, not only a crash of the process (WAL's ``NORMAL`` may lose the
last commits then). The order service's group commits share each fsync among
the notifies of a group. Any other URL (PostgreSQL, whose commits are durable
by default) is used as given, with pre-ping so a dropped pooled connection is
replaced rather than failing a request.
"""
from __future__ import annotations

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

__all__ = ["make_engine"]


def make_engine(url: str, *, checkpoint_pages: int = 1000) -> Engine:
    """An engine for `url`: SQLite in WAL mode, other databases as given.

    `checkpoint_pages` is SQLite's wal_autocheckpoint: the commit that takes
    the write-ahead log past it copies the log into the database file, and
    waits for that. A writer whose commits must not wait for it (the order
    service's group commits) sets it high, as a backstop, and leaves the
    checkpoints to another connection's commits.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # WAL: readers never block the writer
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")   # each commit synced to disk before it returns
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute(f"PRAGMA wal_autocheckpoint={int(checkpoint_pages)}")
            cur.close()
        return engine
    return create_engine(url, pool_pre_ping=True)
