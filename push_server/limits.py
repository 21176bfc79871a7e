"""What one push server process lets clients hold: connections (in all and per address) and message rate.

Both are counted here without I/O; the WebSocket handler asks before it keeps a
connection or handles a message, and closes the client with the code returned
(see push_server/__init__.py for the close codes). The per-address counts hold
an entry only while that address has a connection open, so refused or departed
clients leave nothing behind.
"""
from __future__ import annotations

import time
from typing import Callable

CLOSE_SERVER_FULL = 1013          # "try again later": the process holds push_max_connections already
CLOSE_TOO_MANY_MESSAGES = 4008    # the client sent more than push_max_messages_per_second
CLOSE_ADDRESS_FULL = 4029         # its address holds push_max_connections_per_address already


class ConnectionLimits:
    """Open WebSockets in all and per client address, within `total` and `per_address`."""

    def __init__(self, *, total: int, per_address: int):
        if total < 1 or per_address < 1:
            raise ValueError("connection limits must be at least 1")
        self.total = total
        self.per_address = per_address
        self.open = 0
        self._by_address: dict[str, int] = {}

    def admit(self, address: str) -> tuple[int, str] | None:
        """Count a new connection from `address`; None if admitted, else the (close code, reason) to refuse it."""
        if self.open >= self.total:
            return CLOSE_SERVER_FULL, "server full"
        held = self._by_address.get(address, 0)
        if held >= self.per_address:
            return CLOSE_ADDRESS_FULL, "too many connections from this address"
        self._by_address[address] = held + 1
        self.open += 1
        return None

    def release(self, address: str) -> None:
        """An admitted connection from `address` closed."""
        held = self._by_address.get(address, 0)
        if held <= 1:
            self._by_address.pop(address, None)
        else:
            self._by_address[address] = held - 1
        self.open = max(0, self.open - 1)

    def held_by(self, address: str) -> int:
        return self._by_address.get(address, 0)

    @property
    def addresses(self) -> int:
        return len(self._by_address)


class MessageRate:
    """A token bucket: `rate` messages a second, and up to `rate` at once (at least one)."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic):
        if rate <= 0:
            raise ValueError("a message rate must be positive")
        self.rate = rate
        self.burst = max(1.0, rate)
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()

    def allow(self) -> bool:
        """Take one message's worth; False when the client is over its rate."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
