"""The order store's own process: the notify intake, group commits and the outbox relay.

The HTTP process reads the form of each notify (and each order the shop
places), and its `GroupWriter` hands everything waiting, as one group, to
`StoreProcess.accept`, which sends it over a pipe as a `TakeIn` (handoff.py
names every message). Here the group goes through the intake (intake.py:
verify, parse, and store the placed and the paid orders in one transaction),
its replies go back as a `TakenIn`, and the relay thread (`OutboxRelay`) is
woken to publish the new outbox rows to Kafka. This process is the one
writer of orders: the internal API's placements join the notifies' groups
rather than contend with them for SQLite's write lock.

Why a process and not a thread: the group commits need a good share of a
core at full load, and as a thread they shared the GIL with the event loop,
so each group waited for the GIL longer than it worked and every notify in
the group waited with it (BENCHMARKS.md).

The child ignores SIGTERM and SIGINT: the HTTP process stops it (`Stop`),
after it has stopped taking notifies, so the last groups are committed and
the relay publishes them before it exits. If the HTTP process dies, the pipe
closes and this process stops by itself.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection

from rtdash.settings import Settings

from .handoff import SPAWN, FromStore, GroupFailed, Item, RelayStatus, Reply, Stop, TakeIn, TakenIn, ToStore
from .relay import OutboxRelay

log = logging.getLogger("rtdash.order_service.store_process")

# How long `stop` waits for the store process to commit, publish and exit before it is terminated.
STOP_TIMEOUT_S = 20.0


class StoreUnavailable(RuntimeError):
    """The store process is gone or failed this group; the notify is answered 5xx, the provider retries."""


class StoreProcess:
    """The HTTP process's handle on the store process: `accept` takes a group of notifies in.

    `status` is the relay's, in shared memory, for /healthz. `on_exit` is
    called when the store process exits without being asked to (the service
    then stops).
    """

    def __init__(self, settings: Settings, *, on_exit: Callable[[int | None], None] | None = None):
        self.status = RelayStatus()
        self.on_exit = on_exit or (lambda _code: None)
        self._conn, child_conn = SPAWN.Pipe(duplex=True)
        self._process = SPAWN.Process(target=_store_main, name="order-store",
                                      args=(settings, child_conn, self.status))
        self._child_conn = child_conn
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[int, asyncio.Future[list[Reply]]] = {}
        self._last_group_id = 0

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

    def start(self) -> None:
        self._process.start()
        self._child_conn.close()  # the child has its own copy; ours would keep the pipe open

    async def accept(self, group: list[Item]) -> list[Reply]:
        """Take one group of notifies and placed orders in, in the store process; one reply each, in order."""
        if self._loop is None:
            self._attach(asyncio.get_running_loop())
        if not self.alive:
            raise StoreUnavailable("the order store process is not running")
        self._last_group_id += 1
        group_id = self._last_group_id
        future = self._loop.create_future()
        self._waiting[group_id] = future
        try:
            # One group in flight per writer and a socket buffer far larger than a group of
            # notifies: this send does not wait on the other process.
            self._conn.send(TakeIn(group_id, group))
        except OSError as exc:
            self._waiting.pop(group_id, None)
            raise StoreUnavailable(f"the order store process is gone: {exc}") from exc
        return await future

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self._conn.fileno(), self._on_answers)
        loop.add_reader(self._process.sentinel, self._on_process_exit)

    def _on_answers(self) -> None:
        try:
            while self._conn.poll():
                answer: FromStore = self._conn.recv()
                future = self._waiting.pop(answer.group_id, None)
                if future is None or future.done():
                    continue
                if isinstance(answer, TakenIn):
                    future.set_result(answer.replies)
                else:
                    future.set_exception(StoreUnavailable(answer.reason))
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

    async def stop(self) -> None:
        """Ask the store process to finish (commit, relay, mark) and wait for it."""
        if self._loop is not None:
            self._loop.remove_reader(self._process.sentinel)  # an exit we asked for is not news
        try:
            self._conn.send(Stop())
        except OSError:
            pass
        await asyncio.get_running_loop().run_in_executor(None, self._join)
        self._detach("the order service is stopping")
        self._conn.close()

    def _join(self) -> None:
        self._process.join(STOP_TIMEOUT_S)
        if self._process.is_alive():
            log.warning("order store process did not stop in %.0fs, terminating it", STOP_TIMEOUT_S)
            self._process.terminate()
            self._process.join(5)


def _store_main(settings: Settings, conn: Connection, status: RelayStatus) -> None:
    """The store process: take groups in until `Stop` (or the HTTP process is gone), then stop the relay."""
    from rtdash.database import make_engine
    from rtdash.logs import setup_logging
    from rtdash.keys import load_public_key

    from .intake import NotifyIntake
    from .store import OrderStore

    setup_logging()
    # Stopped by the HTTP process (a Stop on the pipe) once it takes no more notifies, so that
    # the last groups still get committed and published; signals to the whole group are left to it.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The group commits do not checkpoint SQLite's write-ahead log (that would stall the group
    # that triggers it); the relay's own engine does, from its thread.
    engine = make_engine(settings.database, checkpoint_pages=20_000)
    relay_engine = make_engine(settings.database)
    relay = OutboxRelay(OrderStore(relay_engine, topic=settings.orders_topic),
                        bootstrap_servers=settings.kafka_servers, status=status)
    store = OrderStore(engine, topic=settings.orders_topic, on_outbox_write=relay.wake)
    # Only ever the provider's public key, read from where it is installed; gmt_payment in the provider's zone.
    intake = NotifyIntake(store, public_key=load_public_key(settings.provider_public_key_path),
                          app_id=settings.payment_app_id, seller_id=settings.payment_seller_id,
                          tz=settings.provider_tz)
    relay.start()
    log.info("order store running (pid %d): database %s, outbox relay towards %s",
             multiprocessing.current_process().pid, engine.url.render_as_string(hide_password=True),
             settings.kafka_servers)
    try:
        while True:
            try:
                message: ToStore = conn.recv()
            except EOFError:
                log.warning("the order service's HTTP process went away; stopping")
                break
            if isinstance(message, Stop):
                break
            try:
                answer: FromStore = TakenIn(message.group_id, intake.accept(message.items))
            except Exception as exc:  # noqa: BLE001 - the waiting notifies get a 5xx and are sent again
                log.error("taking in a group of %d failed: %s", len(message.items), exc)
                answer = GroupFailed(message.group_id, f"storing the notify failed: {type(exc).__name__}")
            try:
                conn.send(answer)
            except OSError:
                log.warning("the order service's HTTP process went away; stopping")
                break
    finally:
        relay.stop()
        engine.dispose()
        relay_engine.dispose()
        log.info("order store stopped")
