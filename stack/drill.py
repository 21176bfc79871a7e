"""The fault drill (`rtdash drill`): kill each component with SIGKILL under load, and check the numbers.

It starts the whole local stack under its own home on free ports (never a
running stack's), without automatic restarts, then runs phases. Each phase
puts load on for `seconds`: paid orders at `rate`/s, placed in the order
service and paid by notifies sent straight to it, with a share of duplicates,
each re-sent until answered ``success`` (stack.drill_load); and shoppers
through the gateway. Then it SIGKILLs every process of the fault (the order
service's HTTP and store processes; Spark's Python driver and its JVM), leaves
it down for `down` seconds while the load goes on, and restarts it
(`Stack.restart`); the component is *back* once its health check answers and
its on_ready hook (Kafka's topics) has run. The load then stops, and the phase
ends at a quiescent point: no notify of the payer or the payment provider
outstanding, no shopper session under way, and every check of
stack.drill_checks holding. The recovery time is from back to that moment; the
differences are those of the last reading (all empty on success). A first
phase without a fault is the baseline: the time from the end of its load to
the checks holding.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from producers.provider.simulator import PaymentSimulator
from rtdash.channels import ORDERS_TODAY, seq_key
from rtdash.keys import demo_keys, load_private_key
from rtdash.settings import Settings

from .drill_checks import CHECKS, DashboardSocket, Probe
from .drill_load import Payer, Shoppers
from .runner import Stack
from .testing import free_ports

FAULTS = ("order_service", "kafka", "redis", "spark_jobs", "push_server", "notifier")
# Services only one orders mode runs, faults to name when the drill runs in it: the real-time orders
# application and the orders applier of RTDASH_ORDERS_MODE=realtime
# (`default_faults`).
MODE_FAULTS = ("orders_realtime", "orders_applier")
BASELINE = "none"


def default_faults(settings: Settings) -> tuple[str, ...]:
    """Every component the stack of `settings` runs, in the drill's order: in the real-time orders mode the
    real-time orders application and the orders applier come after the Spark application."""
    if settings.orders_mode != "realtime":
        return FAULTS
    at = FAULTS.index("spark_jobs") + 1
    return FAULTS[:at] + MODE_FAULTS + FAULTS[at:]
RECOVERY_TARGET_S = 30.0
POLL_S = 0.25
# Every port setting: the drill's stack gets a free one for each, so it never meets a running stack.
PORTS = tuple(name for name in Settings.model_fields if name.endswith("_port"))
# Settings that may point at services outside the drill's home (a shared Redis, a real provider key).
EXTERNAL = ("kafka_bootstrap", "redis_url", "database_url", "gateway_routes", "order_service_internal_url",
            "provider_public_key", "provider_private_key")


@dataclass(frozen=True)
class DrillPlan:
    """How hard and how long: the load, each phase's timing, the faults in order."""

    rate: float = 20.0                 # new paid notifies per second
    duplicate_share: float = 0.1       # share of notifies that repeat an earlier one
    seconds: float = 20.0              # load before each fault
    down: float = 5.0                  # how long the killed component stays down, load going on
    traffic_rate: float = 1.0          # shopper sessions per second through the gateway (0: none)
    faults: tuple[str, ...] = FAULTS
    recovery_timeout: float = 180.0    # give up waiting for the checks this long after back
    seed: int = 11

    def check(self) -> None:
        unknown = [f for f in self.faults if f not in FAULTS + MODE_FAULTS]
        if unknown:
            raise ValueError(f"unknown fault {', '.join(unknown)}: choose from {', '.join(FAULTS + MODE_FAULTS)}")
        if self.rate <= 0 or self.seconds <= 0 or self.down < 0 or self.traffic_rate < 0:
            raise ValueError("rate and seconds must be positive, down and traffic rate not negative")
        if not 0 <= self.duplicate_share < 1:
            raise ValueError("duplicate share must be in [0, 1)")


@dataclass
class PhaseResult:
    """One fault's outcome: how long it was down, how long the numbers took, how they differ."""

    fault: str
    down_s: float | None = None        # from the kill to the health check answering again
    recovery_s: float | None = None    # from back to every check holding; None: they never did
    orders: int = 0                    # the database's paid orders of the day shown, at the last reading
    amount_cents: int = 0
    differences: dict[str, str] = field(default_factory=lambda: dict.fromkeys(CHECKS, ""))
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.recovery_s is not None and self.recovery_s <= RECOVERY_TARGET_S
                and not any(self.differences.values()))


def drill_settings(home: Path | str, base: Settings | None = None) -> Settings:
    """`base` (default: the environment's) under `home`, every port a free one, and nothing external:
    the drill's Kafka, Redis, database and demo provider keys are its own."""
    base = base or Settings()
    home = Path(home)
    own = dict.fromkeys(EXTERNAL, "")
    return base.model_copy(update={"home": home, **own, **dict(zip(PORTS, free_ports(len(PORTS))))})


class Drill:
    """The phases, run against a started stack on the running event loop."""

    def __init__(self, stack: Stack, plan: DrillPlan, on_step: Callable[[str], None]):
        self.stack = stack
        self.settings = stack.settings
        self.plan = plan
        self.on_step = on_step
        self.stop = asyncio.Event()
        simulator = PaymentSimulator(self.settings, load_private_key(self.settings.provider_private_key_path),
                                     duplicate_share=plan.duplicate_share, seed=plan.seed)
        self.payer = Payer(simulator, self.stop)
        self.socket = DashboardSocket(self.settings, self.stop)
        self.probe = Probe(self.settings, self.payer, self.socket)
        self.traffic: list[Shoppers] = []
        self.results: list[PhaseResult] = []

    async def run(self) -> list[PhaseResult]:
        reader = asyncio.create_task(self.socket.run())
        try:
            for number, fault in enumerate((BASELINE, *self.plan.faults)):
                result = await self.phase(number, fault)
                self.results.append(result)
                self.on_step(f"{fault}: " + (f"recovered in {result.recovery_s:.1f} s" if result.recovery_s
                                             is not None else "did not recover") + ("" if result.ok else " (FAILED)"))
                if result.down_s is None and fault != BASELINE:
                    break  # it never came back: the phases after it would measure nothing
        finally:
            self.stop.set()
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await self.payer.close()
            self.probe.close()
        return self.results

    async def phase(self, number: int, fault: str) -> PhaseResult:
        result = PhaseResult(fault)
        until = asyncio.Event()
        shoppers = None
        if self.plan.traffic_rate:
            shoppers = Shoppers(f"http://{self.settings.bind_host}:{self.settings.gateway_port}",
                                self.plan.traffic_rate, seed=self.plan.seed + number)
            self.traffic.append(shoppers)
        paying = asyncio.create_task(self.payer.pay(self.plan.rate, until))
        try:
            self.on_step(f"{fault}: {self.plan.seconds:g} s of load")
            await asyncio.sleep(self.plan.seconds)
            back = time.monotonic()
            if fault != BASELINE:
                back = await self.fault(fault, result)
        finally:
            until.set()
            await paying
            if shoppers is not None:
                shoppers.end()
        if back is not None:
            await self.converge(result, back, shoppers)
        if shoppers is not None:
            await shoppers.close()
        return result

    async def fault(self, name: str, result: PhaseResult) -> float | None:
        """Kill, wait `down`, restart; the time the service was back, None (with a note) if it never was."""
        before = await asyncio.to_thread(self._orders_seq) if name == "redis" else None
        self.on_step(f"{name}: SIGKILL to all its processes")
        killed = time.monotonic()
        self.stack.service(name).kill()
        await asyncio.sleep(self.plan.down)
        self.on_step(f"{name}: restarting")
        try:
            await asyncio.to_thread(self.stack.restart, name)
        except Exception as exc:  # noqa: BLE001 - StackError with the log's tail, or a failed on_ready hook
            result.notes.append(f"{name} did not come back: {exc}")
            return None
        back = time.monotonic()
        result.down_s = back - killed
        if before is not None:
            after = await asyncio.to_thread(self._orders_seq)
            result.notes.append(f"after its restart Redis numbers orders.today at {after} (before the kill: {before})")
        return back

    def _orders_seq(self) -> int | None:
        value = self.probe.redis.get(seq_key(self.settings.redis_prefix, ORDERS_TODAY))
        return int(value) if value is not None else None

    async def converge(self, result: PhaseResult, back: float, shoppers: Shoppers | None) -> None:
        """Read until every check holds at a quiescent point, or the timeout; the last reading is the result."""
        deadline = back + self.plan.recovery_timeout
        waiting: list[str] = []
        while True:
            busy: list[str] = []
            try:
                truth, found, busy = await self.probe.read()
                result.orders, result.amount_cents, result.differences = truth.count, truth.amount_cents, found
            except Exception as exc:  # noqa: BLE001 - a part not answering yet: read again
                busy = [f"reading failed: {type(exc).__name__}: {exc}"]
            if shoppers is not None and not shoppers.done:
                busy.append("shopper sessions under way")
            if not busy and not any(result.differences.values()):
                result.recovery_s = time.monotonic() - back
                if waiting:
                    result.notes.append("the last reading before: " + "; ".join(waiting))
                return
            if time.monotonic() > deadline:
                result.notes.extend(busy)
                return
            waiting = busy + [f"{check} {text}" for check, text in result.differences.items() if text]
            await asyncio.sleep(POLL_S)


@dataclass
class DrillReport:
    """Every phase's result, with what the load did and where the stack ran."""

    settings: Settings
    plan: DrillPlan
    results: list[PhaseResult]
    summary: list[str]

    @property
    def ok(self) -> bool:
        return len(self.results) == 1 + len(self.plan.faults) and all(r.ok for r in self.results)


async def _run(stack: Stack, plan: DrillPlan, on_step: Callable[[str], None]) -> tuple[list[PhaseResult], list[str]]:
    drill = Drill(stack, plan, on_step)
    results = await drill.run()
    payer, report = drill.payer, drill.payer.simulator.report
    summary = [f"payer: {report.sent} notifies posted ({report.duplicates_sent} duplicates and re-sends, "
               f"{payer.resends} re-sends), {len(payer.acknowledged)} orders acknowledged, "
               f"{len(payer.given_up)} given up, {len(payer.not_placed)} not paid (the order could not be placed)",
               f"dashboard WebSocket: {drill.socket.connections} connections (reconnected by itself)"]
    if drill.traffic:
        shopped = [shoppers.report for shoppers in drill.traffic]
        statuses = sum((r.statuses for r in shopped), Counter())
        summary.append(f"shoppers through the gateway: {sum(r.sessions for r in shopped)} sessions, "
                       f"{sum(sum(r.requests.values()) for r in shopped)} requests {dict(sorted(statuses.items()))}, "
                       f"{sum(len(r.orders) for r in shopped)} orders checked out")
    summary += [f"{result.fault}: {note}" for result in results for note in result.notes]
    return results, summary


def run_drill(plan: DrillPlan, settings: Settings, on_step: Callable[[str], None] = lambda _msg: None) -> DrillReport:
    """Start the stack of `settings` (see `drill_settings`), run the phases, stop everything, also on failure."""
    from .services import local_stack

    plan.check()
    demo_keys(settings)   # the demo provider's pair, under the drill's home: it signs the payer's notifies
    stack = Stack(settings, local_stack(settings))
    try:
        stack.start(on_step=on_step)
        results, summary = asyncio.run(_run(stack, plan, on_step))
    finally:
        on_step("stopping the local stack")
        stack.stop()
    return DrillReport(settings, plan, results, summary)
