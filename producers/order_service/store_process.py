"""The order store's own process: the notify intake, group commits and the outbox relay.

The HTTP process reads the form of each notify, and its `GroupWriter` hands
every waiting notify, as one group, to this process over a pipe. Here the
group goes through the intake (intake.py: verify, parse, and store the paid
ones in one transaction), one reply per notify goes back, and the relay
thread (`OutboxRelay`) is woken to publish the new outbox rows to Kafka.

Why a process and not a thread: measured at 1,500 notifies/s, the database
writer took a fifth of a core, and as a thread it shared the GIL with the
event loop, so each group commit waited for the GIL longer than it worked
and every notify in the group waited with it (BENCHMARKS.md).

The child ignores SIGTERM and SIGINT: the HTTP process stops it, after it
has stopped taking notifies, so the last groups are committed and the relay
publishes them before it exits. If the HTTP process dies, the pipe closes
and this process stops by itself.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
from collections.abc import Callable
from pathlib import Path

from rtdash.settings import Settings

from .intake import Received, Reply
from .relay import SPAWN, OutboxRelay, RelayStatus

log = logging.getLogger("rtdash.order_service.store_process")


class StoreUnavailable(RuntimeError):
    """The store process is gone or failed this group; the notify is answered 5xx, the provider retries."""


class StoreProcess:
    """The HTTP process's handle on the store process: `accept` takes a group of notifies in."""

    def __init__(self, settings: Settings, *, on_exit: Callable[[int | None], None] | None = None):
        self.status = RelayStatus()
        self.on_exit = on_exit or (lambda _code: None)
        self._conn, child_conn = SPAWN.Pipe(duplex=True)
        config = dict(database=settings.database, topic=settings.orders_topic,
                      bootstrap_servers=settings.kafka_servers, keys_dir=str(settings.keys_dir),
                      app_id=settings.payment_app_id, seller_id=settings.payment_seller_id,
                      timezone=settings.timezone)
        self._process = SPAWN.Process(target=_store_main, name="order-store",
                                      args=(config, child_conn, self.status))
        self._child_conn = child_conn
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[int, asyncio.Future] = {}
        self._next_id = 0

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

    def start(self) -> None:
        self._process.start()
        self._child_conn.close()  # the child has its own copy; ours would keep the pipe open

    async def accept(self, group: list[Received]) -> list[Reply]:
        """Take one group of notifies in, in the store process; one reply per notify, in order."""
        if self._loop is None:
            self._attach(asyncio.get_running_loop())
        if not self._process.is_alive():
            raise StoreUnavailable("the order store process is not running")
        self._next_id += 1
        future = self._loop.create_future()
        self._waiting[self._next_id] = future
        try:
            # One group in flight per writer and a socket buffer far larger than a group of
            # notifies: this send does not wait on the other process.
            self._conn.send((self._next_id, group))
        except OSError as exc:
            self._waiting.pop(self._next_id, None)
            raise StoreUnavailable(f"the order store process is gone: {exc}") from exc
        return await future

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self._conn.fileno(), self._on_replies)
        loop.add_reader(self._process.sentinel, self._on_process_exit)

    def _on_replies(self) -> None:
        try:
            while self._conn.poll():
                group, replies, error = self._conn.recv()
                future = self._waiting.pop(group, None)
                if future is None or future.done():
                    continue
                if error is None:
                    future.set_result(replies)
                else:
                    future.set_exception(StoreUnavailable(error))
        except (EOFError, OSError):
            self._detach("the order store process closed its pipe")

    def _on_process_exit(self) -> None:
        self._process.join(1)  # its pipe closes just before it can be reaped
        code = self._process.exitcode
        self._detach(f"the order store process exited (code {code})")
        self.on_exit(code)

    def _detach(self, reason: str) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._conn.fileno())
            self._loop.remove_reader(self._process.sentinel)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(StoreUnavailable(reason))
        self._waiting.clear()

    async def stop(self, timeout: float = 20.0) -> None:
        """Ask the store process to finish (commit, relay, mark) and wait for it."""
        if self._loop is not None:
            self._loop.remove_reader(self._process.sentinel)  # an exit we asked for is not news
        try:
            self._conn.send(None)
        except OSError:
            pass
        await asyncio.get_running_loop().run_in_executor(None, self._join, timeout)
        self._detach("the order service is stopping")
        self._conn.close()

    def _join(self, timeout: float) -> None:
        self._process.join(timeout)
        if self._process.is_alive():
            log.warning("order store process did not stop in %.0fs, terminating it", timeout)
            self._process.terminate()
            self._process.join(5)


def _store_main(config: dict, conn, status: RelayStatus) -> None:
    from zoneinfo import ZoneInfo

    from rtdash.logs import setup_logging
    from rtdash.payments import load_public_key

    from .intake import NotifyIntake
    from .store import OrderStore, make_engine

    setup_logging()
    # Stopped by the HTTP process (a None on the pipe) once it takes no more notifies, so that
    # the last groups still get committed and published; signals to the whole group are left to it.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The group commits do not checkpoint SQLite's write-ahead log (that would stall the group
    # that triggers it); the relay's own engine does, from its thread.
    engine = make_engine(config["database"], checkpoint_pages=20_000)
    relay_engine = make_engine(config["database"])
    store = OrderStore(engine, topic=config["topic"])
    intake = NotifyIntake(store, public_key=load_public_key(Path(config["keys_dir"])), app_id=config["app_id"],
                          seller_id=config["seller_id"], tz=ZoneInfo(config["timezone"]))
    relay = OutboxRelay(OrderStore(relay_engine, topic=config["topic"]),
                        bootstrap_servers=config["bootstrap_servers"], status=status)
    store.on_outbox_write = relay.wake
    relay.start()
    log.info("order store running (pid %d): database %s, outbox relay towards %s",
             multiprocessing.current_process().pid, engine.url.render_as_string(hide_password=True),
             config["bootstrap_servers"])
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:
                log.warning("the order service's HTTP process went away; stopping")
                break
            if message is None:
                break
            group_id, group = message
            try:
                reply = (group_id, intake.accept(group), None)
            except Exception as exc:  # noqa: BLE001 - the waiting notifies get a 5xx and are sent again
                log.error("taking in %d notifies failed: %s", len(group), exc)
                reply = (group_id, None, f"storing the notify failed: {type(exc).__name__}")
            try:
                conn.send(reply)
            except OSError:
                log.warning("the order service's HTTP process went away; stopping")
                break
    finally:
        relay.stop()
        engine.dispose()
        relay_engine.dispose()
        log.info("order store stopped")
