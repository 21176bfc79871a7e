"""What the order service's two processes hand each other: one named type per message.

The HTTP process reads each notify's body (a `Received`), and takes each
order the shop places through the internal API (a `PlaceOrder`); it answers
each with a `Reply`. In between, both go to the order store process, in
groups, over a pipe, so that the store process stays the one writer:

    HTTP process (StoreProcess.accept)          order store process (store_process._store_main)
    TakeIn(group_id, items)             ──▶     the intake: verify and parse the notifies, then store
                                                the group's new orders and newly paid ones together
                                        ◀──     TakenIn(group_id, replies): one Reply per item, in order
                                        ◀──     GroupFailed(group_id, reason): the group was not stored
    Stop()                              ──▶     commit what is left, let the relay publish, exit

Each is a NamedTuple: pickled small and fast, as every group crosses the pipe.
The relay's counters, which /healthz reports from the HTTP process, are
shared memory (`RelayStatus`).
"""
from __future__ import annotations

import multiprocessing
from typing import NamedTuple

# The store process is started fresh (spawn), not forked from the HTTP process and its event loop.
SPAWN = multiprocessing.get_context("spawn")


class Received(NamedTuple):
    """One notify as the HTTP process read it: its form body (size and Content-Type checked) and its sender."""

    body: bytes
    remote_ip: str


class PlaceOrder(NamedTuple):
    """An order the shop placed, with its amount: a notify can pay it only for that amount (validated already)."""

    order_id: str
    amount_cents: int


Item = Received | PlaceOrder            # what a group holds


class Reply(NamedTuple):
    """What the provider gets back: an HTTP status and the body text."""

    status: int
    text: str


class TakeIn(NamedTuple):
    """A group of notifies and placed orders for the store process to take in."""

    group_id: int
    items: list[Item]


class TakenIn(NamedTuple):
    """The group went through the intake: one reply per item, in the order they were sent."""

    group_id: int
    replies: list[Reply]


class GroupFailed(NamedTuple):
    """The group could not be stored (the database failed); every item in it is answered 5xx."""

    group_id: int
    reason: str


class Stop(NamedTuple):
    """No more groups: the store process commits, lets the relay publish, and exits."""


ToStore = TakeIn | Stop                 # what the HTTP process sends
FromStore = TakenIn | GroupFailed       # what the store process answers


class RelayStatus:
    """What the relay reports to /healthz, in shared memory (readable from another process)."""

    def __init__(self) -> None:
        self._published = SPAWN.Value("q", 0)
        self._connected = SPAWN.Value("b", 0)
        self._error = SPAWN.Array("c", 300)

    @property
    def published(self) -> int:
        return self._published.value

    def add_published(self, n: int) -> None:
        with self._published.get_lock():
            self._published.value += n

    @property
    def kafka_connected(self) -> bool:
        return bool(self._connected.value)

    @kafka_connected.setter
    def kafka_connected(self, value: bool) -> None:
        self._connected.value = int(value)

    @property
    def last_error(self) -> str | None:
        return self._error.value.decode(errors="replace") or None

    @last_error.setter
    def last_error(self, value: str | None) -> None:
        self._error.value = (value or "").encode()[:299]
