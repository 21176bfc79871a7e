"""tests/waiting.py: waits until the check holds, fails with what it last saw; on a fake clock."""
from __future__ import annotations

import asyncio

import pytest

from waiting import eventually, eventually_async


class FakeClock:
    """A clock that moves only when the helper sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


def countdown(calls: int, value="ready"):
    """A predicate that holds from its `calls`-th call on, returning `value`."""
    seen = []

    def check():
        seen.append(1)
        return value if len(seen) >= calls else False
    return check


def test_returns_the_value_once_the_predicate_holds():
    clock = FakeClock()
    assert eventually(countdown(4, {"seq": 3}), timeout=5, interval=0.5, clock=clock,
                      sleep=clock.sleep) == {"seq": 3}
    assert clock.slept == [0.5, 0.5, 0.5]


def test_an_asserting_check_holds_once_it_raises_nothing():
    clock = FakeClock()
    left = [3]

    def check():
        left[0] -= 1
        assert left[0] == 0, f"{left[0]} to go"

    assert eventually(check, timeout=5, interval=1, clock=clock, sleep=clock.sleep) is None
    assert clock.slept == [1, 1]


def test_none_from_a_predicate_means_not_yet():
    clock = FakeClock()
    store: dict = {}

    def fetch():
        if len(clock.slept) == 2:
            store["key"] = "value"
        return store.get("key")

    assert eventually(fetch, timeout=5, interval=1, clock=clock, sleep=clock.sleep) == "value"
    assert clock.slept == [1, 1]
    with pytest.raises(AssertionError, match="last value: None"):
        eventually(lambda: {}.get("key"), timeout=1, interval=0.5, clock=clock, sleep=clock.sleep)


def test_asserts_count_also_when_pytest_did_not_rewrite_them():
    state = {"ready": False}
    namespace = {"state": state}
    exec(compile("def check():\n    assert state['ready'], 'not ready'\n", "<plain>", "exec"), namespace)
    clock = FakeClock()

    def sleep(seconds):
        clock.sleep(seconds)
        state["ready"] = True

    assert eventually(namespace["check"], timeout=5, interval=1, clock=clock, sleep=sleep) is None
    assert clock.slept == [1]


def test_times_out_with_what_and_the_last_value():
    clock = FakeClock()
    with pytest.raises(AssertionError) as failed:
        eventually(lambda: [], timeout=1, interval=0.3, what="the queue fills", clock=clock, sleep=clock.sleep)
    message = str(failed.value)
    assert message.startswith("the queue fills: not reached within 1 s")
    assert "last value: []" in message
    # Checked at 0, 0.3, 0.6, 0.9 and at the deadline; never slept past it.
    assert "(5 checks)" in message and sum(clock.slept) == pytest.approx(1.0)


def test_times_out_with_the_last_assertion():
    clock = FakeClock()
    seqs = iter(range(1, 100))

    def check():
        seq = next(seqs)
        assert seq == 0, f"seq is {seq}"

    with pytest.raises(AssertionError, match=r"seq 7 arrives: .*last assertion: seq is 3") as failed:
        eventually(check, timeout=2, interval=1, what="seq 7 arrives", clock=clock, sleep=clock.sleep)
    assert isinstance(failed.value.__cause__, AssertionError)


def test_falsy_values_mean_not_yet():
    for falsy in (False, 0, "", {}, []):
        clock = FakeClock()
        with pytest.raises(AssertionError, match="not reached"):
            eventually(lambda: falsy, timeout=0.2, interval=0.1, clock=clock, sleep=clock.sleep)


def test_other_errors_end_the_wait_at_once():
    clock = FakeClock()

    def check():
        raise ConnectionRefusedError("nothing listens")

    with pytest.raises(ConnectionRefusedError):
        eventually(check, timeout=10, clock=clock, sleep=clock.sleep)
    assert clock.slept == []


def test_checks_once_even_without_time():
    assert eventually(lambda: 7, timeout=0) == 7
    with pytest.raises(AssertionError, match=r"\(1 checks\)"):
        eventually(lambda: False, timeout=0)
    with pytest.raises(ValueError):
        eventually(lambda: True, timeout=-1)


def test_real_clock_with_a_tiny_timeout():
    with pytest.raises(AssertionError, match="never: not reached within 0.02 s"):
        eventually(lambda: False, timeout=0.02, interval=0.005, what="never")


def test_async_waits_for_plain_and_async_checks():
    async def scenario():
        clock = FakeClock()
        assert await eventually_async(countdown(3, 42), timeout=5, interval=0.25, clock=clock,
                                      sleep=clock.async_sleep) == 42
        assert clock.slept == [0.25, 0.25]

        arrived = asyncio.Event()
        asyncio.get_running_loop().call_later(0.01, arrived.set)

        async def check():
            await asyncio.sleep(0)
            assert arrived.is_set(), "not yet"
            return "arrived"

        assert await eventually_async(check, timeout=5, interval=0.005) == "arrived"

    asyncio.run(scenario())


def test_async_times_out_with_the_message():
    async def scenario():
        clock = FakeClock()

        async def check():
            return 0

        with pytest.raises(AssertionError, match=r"the socket closes: not reached within 3 s .*last value: 0"):
            await eventually_async(check, timeout=3, interval=1, what="the socket closes", clock=clock,
                                   sleep=clock.async_sleep)

    asyncio.run(scenario())
