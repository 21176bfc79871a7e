"""Group commit: every notify waiting for the database goes into one transaction.

The endpoint takes `writer.submit(received)`, a future of the notify's
reply; one task on the loop takes whatever is queued (up to `max_batch`),
hands it to `commit` in one call and resolves each future with its own
reply. While one batch commits the next one gathers (for at least
`gather_s` under load, see `GroupWriter`), so under load a transaction
carries many orders and the single SQLite writer keeps up; a lone notify
is a batch of its own and waits for no company.

`commit` is the notify intake (intake.py: read, verify, parse, store) for a whole
group, wherever it runs: in the order store's own process (store_process.py,
as the service runs) or on an executor thread of this process
(`commit_in_executor`, for tests and embedding).
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor

from .intake import NotifyIntake, Received, Reply

Commit = Callable[[list[Received]], Awaitable[list[Reply]]]


def commit_in_executor(intake: NotifyIntake, db: Executor) -> Commit:
    """A `commit` that runs the intake of a group on `db`, a thread of this process."""
    async def commit(group: list[Received]) -> list[Reply]:
        return await asyncio.get_running_loop().run_in_executor(db, intake.accept, group)
    return commit


class GroupWriter:
    """Takes notifies in by groups through `commit`, one group at a time.

    Under load (the last group had company) a group waits `gather_s` before
    it goes, so that more notifies join it: a group has a fixed cost on both
    sides of the pipe (a transaction, a round trip, two task steps), and
    measured at 1,500 notifies/s it was as large as the cost of two notifies.
    One notify alone, the common case at a few per second, goes at once.
    """

    def __init__(self, commit: Commit, *, max_batch: int = 256, gather_s: float = 0.002):
        self.commit = commit
        self.max_batch = max_batch
        self.gather_s = gather_s
        self._last_size = 0
        self._queue: asyncio.Queue[tuple[Received, asyncio.Future]] = asyncio.Queue()
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

    def submit(self, received: Received) -> "asyncio.Future[Reply]":
        """The reply to one notify, resolved once its group has been through the intake."""
        self.start()
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((received, future))
        return future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._last_size > 1 and self.gather_s:
                await asyncio.sleep(self.gather_s)
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._last_size = len(batch)
            try:
                replies = await self.commit([received for received, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every waiter learns of the failure (and logs it)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for (_, future), reply in zip(batch, replies):
                    if not future.done():
                        future.set_result(reply)
            finally:
                for _ in batch:
                    self._queue.task_done()
