"""Bounded retries, one way for every service: tenacity's policies with rtdash's defaults.

A retry here always has two bounds: the pause between attempts doubles from `first_s`
up to `max_s`, and it ends after `attempts` tries, or once `stop` is set (a service
that waits for Kafka or the SMS gateway to come back retries for as long as it runs,
and stops retrying on SIGTERM). With neither, `retrying` refuses: no retry without a
bound.

    for attempt in retrying(first_s=0.25, max_s=5, stop=stopping, log=log, what="kafka"):
        with attempt:
            publish(batch)
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from tenacity import (AsyncRetrying, RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt,
                      stop_any, stop_when_event_set, wait_exponential, wait_random)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

__all__ = ["retrying", "async_retrying", "pauses"]


def pauses(first_s: float, max_s: float, *, jitter: bool = False) -> wait_base:
    """The pause before each next attempt: `first_s`, doubled each time, at most `max_s`.

    With `jitter`, up to `first_s` more at random, so that several clients of one server do not
    all come back at the same instant.
    """
    wait = wait_exponential(multiplier=first_s, min=first_s, max=max_s, exp_base=2)
    return wait + wait_random(0, first_s) if jitter else wait


class _stop_when_set(stop_base):
    """Stop once an asyncio.Event is set (tenacity's own takes a threading.Event)."""

    def __init__(self, event: asyncio.Event):
        self.event = event

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.event.is_set()


def _stop(attempts: int | None, stop: threading.Event | asyncio.Event | None):
    bounds = []
    if attempts is not None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {attempts}")
        bounds.append(stop_after_attempt(attempts))
    if isinstance(stop, asyncio.Event):
        bounds.append(_stop_when_set(stop))
    elif stop is not None:
        bounds.append(stop_when_event_set(stop))
    if not bounds:
        raise ValueError("a retry needs a bound: give attempts= or stop= (an event set on shutdown)")
    return stop_any(*bounds)


def _logger(log: logging.Logger | None, what: str) -> Callable[[RetryCallState], None] | None:
    if log is None:
        return None

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("%s failed (attempt %d), retrying in %.2fs: %s", what, state.attempt_number,
                    state.upcoming_sleep, exc)
    return before_sleep


def retrying(*, first_s: float, max_s: float, attempts: int | None = None, stop: threading.Event | None = None,
             on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
             log: logging.Logger | None = None, what: str = "operation") -> Retrying:
    """A blocking retry loop. Pauses wait on `stop` (when given): setting it ends a pause at once,
    and the attempt after that pause is the last.

    When the bound is reached the last exception is raised as it was (not wrapped).
    """
    sleep = (lambda seconds: stop.wait(seconds)) if stop is not None else None
    kwargs = {"sleep": sleep} if sleep else {}
    return Retrying(wait=pauses(first_s, max_s), stop=_stop(attempts, stop), retry=retry_if_exception_type(on),
                    before_sleep=_logger(log, what), reraise=True, **kwargs)


def async_retrying(*, first_s: float, max_s: float, attempts: int | None = None, stop: asyncio.Event | None = None,
                   jitter: bool = False, on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
                   log: logging.Logger | None = None, what: str = "operation") -> AsyncRetrying:
    """The same for coroutines, bounded by `attempts` or by `stop` (an asyncio.Event set on shutdown;
    the task is cancelled too, which ends a pause at once)."""
    return AsyncRetrying(wait=pauses(first_s, max_s, jitter=jitter), stop=_stop(attempts, stop),
                         retry=retry_if_exception_type(on), before_sleep=_logger(log, what), reraise=True,
                         sleep=asyncio.sleep)
