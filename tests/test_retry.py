"""rtdash.retry: bounded by attempts or by a stop event, pauses doubling up to a cap."""
import threading

import pytest

from rtdash.retry import pauses, retrying


def test_refuses_a_retry_without_a_bound():
    with pytest.raises(ValueError, match="needs a bound"):
        retrying(first_s=0.1, max_s=1)


def test_pauses_double_from_first_up_to_max():
    from tenacity import RetryCallState
    wait = pauses(0.25, 2.0)
    got = []
    for n in range(1, 7):
        state = RetryCallState(None, None, (), {})
        state.attempt_number = n
        got.append(wait(state))
    assert got == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]


def test_pauses_stay_at_the_cap_however_long_the_outage():
    from tenacity import RetryCallState
    state = RetryCallState(None, None, (), {})
    state.attempt_number = 5_000          # 2 ** 4999 overflows a float
    assert pauses(0.2, 5.0)(state) == 5.0
    assert 5.0 <= pauses(0.2, 5.0, jitter=True)(state) <= 5.2


def test_async_retrying_ends_when_its_stop_event_is_set():
    import asyncio

    from rtdash.retry import async_retrying

    async def scenario():
        stop = asyncio.Event()
        calls = []
        with pytest.raises(OSError):
            async for attempt in async_retrying(first_s=600, max_s=600, stop=stop, on=OSError):
                with attempt:
                    calls.append(1)
                    stop.set()
                    raise OSError("redis down")
        return len(calls)

    assert asyncio.run(scenario()) == 1


def test_gives_up_after_attempts_with_the_last_error():
    calls = []
    slept = []
    policy = retrying(first_s=0.5, max_s=1.0, attempts=3, on=OSError)
    policy.sleep = slept.append
    with pytest.raises(OSError, match="down 3"):
        for attempt in policy:
            with attempt:
                calls.append(1)
                raise OSError(f"down {len(calls)}")
    assert len(calls) == 3
    assert slept == [0.5, 1.0]


def test_other_errors_are_not_retried():
    calls = []
    with pytest.raises(KeyError):
        for attempt in retrying(first_s=0.01, max_s=0.01, attempts=5, on=OSError):
            with attempt:
                calls.append(1)
                raise KeyError("bad input")
    assert len(calls) == 1


def test_a_stop_event_ends_the_pause_and_the_retries():
    stop = threading.Event()
    calls = []
    with pytest.raises(OSError):
        for attempt in retrying(first_s=600, max_s=600, stop=stop, on=OSError):
            with attempt:
                calls.append(1)
                if len(calls) == 1:
                    threading.Timer(0.05, stop.set).start()   # SIGTERM during the 600 s pause
                raise OSError("kafka down")
    # the pause returned when the event was set; the attempt after it was the last
    assert len(calls) == 2


def test_success_after_failures_returns_normally():
    calls = []
    policy = retrying(first_s=0.01, max_s=0.01, attempts=4, on=OSError)
    policy.sleep = lambda _s: None
    for attempt in policy:
        with attempt:
            calls.append(1)
            if len(calls) < 3:
                raise OSError("not yet")
    assert len(calls) == 3
