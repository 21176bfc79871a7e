"""The group writer: notifies waiting together go through the intake as one group, in order."""
from __future__ import annotations

import asyncio

from producers.order_service.handoff import Received, Reply
from producers.order_service.writer import GroupWriter
from waiting import eventually_async


def received(n: int) -> Received:
    return Received(f"out_trade_no={n}".encode(), "127.0.0.1")


class Intake:
    """Stands in for the store process: records each group and answers every notify with its body."""

    def __init__(self) -> None:
        self.groups: list[list[bytes]] = []

    async def commit(self, group: list[Received]) -> list[Reply]:
        self.groups.append([r.body for r in group])
        await asyncio.sleep(0)
        return [Reply(200, r.body.decode()) for r in group]


def test_a_lone_notify_goes_at_once_and_notifies_under_load_gather_into_groups():
    intake = Intake()

    async def scenario():
        # A long gather, so that "at once" and "gathered" cannot be confused on a slow machine.
        writer = GroupWriter(intake.commit, gather_s=1.0)
        alone = await asyncio.wait_for(writer.submit(received(0)), timeout=0.5)   # no company: no gather
        burst = [writer.submit(received(n)) for n in (1, 2, 3)]                   # waiting together: one group
        await asyncio.gather(*burst)
        first = writer.submit(received(4))           # the last group had company: this one waits for more...
        await eventually_async(writer._queue.empty, what="the writer took the notify and gathers")
        second = writer.submit(received(5))          # ...and this one joins it
        replies = await asyncio.gather(first, second)
        await writer.stop()
        return alone, [f.result() for f in burst], replies

    alone, burst, replies = asyncio.run(scenario())
    assert alone == Reply(200, "out_trade_no=0")
    assert burst == [Reply(200, f"out_trade_no={n}") for n in (1, 2, 3)]
    assert replies == [Reply(200, "out_trade_no=4"), Reply(200, "out_trade_no=5")]
    assert intake.groups == [[b"out_trade_no=0"], [b"out_trade_no=1", b"out_trade_no=2", b"out_trade_no=3"],
                             [b"out_trade_no=4", b"out_trade_no=5"]]


def test_a_failed_group_fails_each_of_its_notifies_and_the_next_group_goes_on():
    calls: list[int] = []

    async def commit(group: list[Received]) -> list[Reply]:
        calls.append(len(group))
        if len(calls) == 1:
            raise RuntimeError("database is locked")
        return [Reply(200, "success") for _ in group]

    async def scenario():
        writer = GroupWriter(commit, gather_s=0)
        failed = await asyncio.gather(writer.submit(received(1)), writer.submit(received(2)), return_exceptions=True)
        ok = await writer.submit(received(3))
        await writer.stop()
        return failed, ok

    failed, ok = asyncio.run(scenario())
    assert [type(f) for f in failed] == [RuntimeError, RuntimeError]
    assert ok == Reply(200, "success")
    assert calls == [2, 1]
