"""Waiting in tests: on the condition, never for a fixed time.

`eventually(check)` calls `check()` until the condition it checks holds, and
fails the test with what was last seen when it does not hold in time. A check
is either

* a predicate (a lambda, or a function without asserts), which holds once it
  returns a truthy value; that value is returned, so a check can fetch what
  the test goes on to use. None, False, 0 and empty values mean "not yet", so
  ``lambda: store.get(key)`` waits for the key; or
* a function with assert statements, which holds once it raises no
  AssertionError (returning None, or a truthy value).

Any exception other than AssertionError is a real error and ends the wait at
once (raise one to give up early, e.g. when the process under test exited).

    from waiting import eventually
    state = eventually(lambda: health(port), what="the push server answers")

`eventually_async` is the same for async tests; its check may be a plain
function or return an awaitable (an ``async def``).
"""
from __future__ import annotations

import asyncio
import dis
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["eventually", "eventually_async"]

_NOT_YET = object()


def _asserts(check: Callable) -> bool:
    """Whether `check`'s own code has an assert statement (plain, or as pytest rewrites it)."""
    code = getattr(check, "__code__", None)
    if code is None:
        return False
    return "AssertionError" in code.co_names or any(
        instruction.opname == "LOAD_ASSERTION_ERROR" for instruction in dis.get_instructions(code))


class _Attempts:
    """The outcome of each call of a check, and the failure message when time runs out."""

    def __init__(self, check: Callable, what: str, timeout: float) -> None:
        if timeout < 0:
            raise ValueError(f"timeout must not be negative, not {timeout}")
        self.none_holds = _asserts(check)
        self.what = what
        self.timeout = timeout
        self.calls = 0
        self.last_value: Any = _NOT_YET
        self.last_error: AssertionError | None = None

    def seen(self, value: Any) -> Any:
        """The value if the condition holds, else `_NOT_YET` (remembering the value)."""
        self.calls += 1
        if value or (value is None and self.none_holds):
            return value
        self.last_error, self.last_value = None, value
        return _NOT_YET

    def failed(self, error: AssertionError) -> Any:
        """A check that asserted: not yet (remembering the assertion)."""
        self.calls += 1
        self.last_error, self.last_value = error, _NOT_YET
        return _NOT_YET

    def failure(self) -> AssertionError:
        if self.last_error is not None:
            last = f"last assertion: {self.last_error}"
        else:
            last = f"last value: {self.last_value!r}"
        error = AssertionError(f"{self.what}: not reached within {self.timeout:g} s "
                               f"({self.calls} checks); {last}")
        error.__cause__ = self.last_error
        return error


def eventually(check: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.05,
               what: str = "condition", clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> T:
    """Call `check` every `interval` seconds until it holds; its value, or an AssertionError after `timeout`.

    The check runs at least once, and once more at the deadline. `clock` and
    `sleep` are for tests of this helper (a fake clock).
    """
    attempts = _Attempts(check, what, timeout)
    deadline = clock() + timeout
    while True:
        try:
            value = attempts.seen(check())
        except AssertionError as exc:
            value = attempts.failed(exc)
        if value is not _NOT_YET:
            return value
        left = deadline - clock()
        if left <= 0:
            raise attempts.failure()
        sleep(min(interval, left))


async def eventually_async(check: Callable[[], T | Awaitable[T]], *, timeout: float = 30.0,
                           interval: float = 0.05, what: str = "condition",
                           clock: Callable[[], float] = time.monotonic,
                           sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> T:
    """`eventually` for async tests: waits with `asyncio.sleep`, so the loop keeps serving meanwhile."""
    attempts = _Attempts(check, what, timeout)
    deadline = clock() + timeout
    while True:
        try:
            value = check()
            value = attempts.seen(await value if inspect.isawaitable(value) else value)
        except AssertionError as exc:
            value = attempts.failed(exc)
        if value is not _NOT_YET:
            return value
        left = deadline - clock()
        if left <= 0:
            raise attempts.failure()
        await sleep(min(interval, left))
