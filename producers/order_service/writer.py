"""Group commit: every notify (and placed order) waiting for the database goes into one transaction.

The endpoints take `writer.submit(item)`, a future of the item's reply (a
notify's `Received`, or a `PlaceOrder` from the internal API); one task on
the loop takes whatever is queued (up to `MAX_GROUP`),
hands it to `commit` in one call and resolves each future with its own
reply. While one group commits the next one gathers (for at least
`gather_s` under load, see `GroupWriter`), so under load a transaction
carries many orders and the single SQLite writer keeps up; a lone notify
is a group of its own and waits for no company.

`commit` is, as the service runs, `StoreProcess.accept`: the group goes to
the order store process, through the intake there (intake.py: read, verify,
parse, store), and its replies come back.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from .handoff import Item, Reply

Commit = Callable[[list[Item]], Awaitable[list[Reply]]]

MAX_GROUP = 256      # notifies in one group at most
GATHER_S = 0.002     # under load, how long a group waits for company before it goes


class GroupWriter:
    """Takes notifies in by groups through `commit`, one group at a time.

    Under load (the last group had company) a group waits `gather_s` before
    it goes, so that more notifies join it: a group has a fixed cost on both
    sides of the pipe (a transaction, a round trip, two task steps), of the
    order of a few notifies' own cost (BENCHMARKS.md). One notify alone, the
    common case at a few per second, goes at once. (`gather_s` is a parameter
    so that tests can tell "at once" from "gathered" on a slow machine.)
    """

    def __init__(self, commit: Commit, *, gather_s: float = GATHER_S):
        self.commit = commit
        self.gather_s = gather_s
        self._last_size = 0
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future]] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the writer task on the running loop (done by the first `submit` if not before)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    def submit(self, item: Item) -> "asyncio.Future[Reply]":
        """The reply to one notify or placed order, resolved once its group has been through the intake."""
        self.start()
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return future

    async def _run(self) -> None:
        while True:
            group = [await self._queue.get()]
            if self._last_size > 1 and self.gather_s:
                await asyncio.sleep(self.gather_s)
            while len(group) < MAX_GROUP and not self._queue.empty():
                group.append(self._queue.get_nowait())
            self._last_size = len(group)
            try:
                replies = await self.commit([item for item, _ in group])
            except Exception as exc:  # noqa: BLE001 - every waiter learns of the failure (and logs it)
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for (_, future), reply in zip(group, replies):
                    if not future.done():
                        future.set_result(reply)
            finally:
                for _ in group:
                    self._queue.task_done()
