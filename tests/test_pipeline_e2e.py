"""End to end on the real stack: signed notify -> order service -> Kafka -> Spark -> Redis -> WebSocket.

Everything here is a real component started by the session fixtures: a Kafka
broker (KRaft), redis-server, the Spark orders job (in the test's
SparkSession), the order service and the push server as processes. The ground
truth is the order service's database: what the dashboard ends up showing must
equal the paid orders stored there for the day it shows, exactly (so a run
across midnight compares the same day on both sides).

Each test runs in both orders modes (RTDASH_ORDERS_MODE): `microbatch`, the
micro-batch orders job writing Redis; `realtime`, the real-time-mode query
(supervised as `python -m jobs` runs it) and the orders applier process, on a
Redis prefix and push server of their own, so each dashboard has one writer.
"""
from __future__ import annotations

import asyncio
import json
import urllib.request
from datetime import date, datetime
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from producers.provider.simulator import PaymentSimulator
from stack.services import python_service
from stack.testing import free_port
from rtdash.channels import ORDERS_TODAY
from rtdash.keys import load_private_key
from rtdash.payments import FORM_HEADERS as FORM, NOTIFY_PATH, notify_body, notify_params

from dashboard_tokens import ws_url
from paying import paid_on, pay
from waiting import eventually, eventually_async

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["microbatch", "realtime"])
def orders_path(request, stack_settings):
    """The settings of a dashboard whose orders come through the path of the mode `request.param`."""
    if request.param == "microbatch":
        request.getfixturevalue("pipeline")
        yield stack_settings
        return
    from jobs import orders_realtime
    from jobs.service import JobRunner

    for service in ("order_service", "redis_server"):
        request.getfixturevalue(service)
    spark = request.getfixturevalue("spark")
    settings = stack_settings.model_copy(update={
        "orders_mode": "realtime", "redis_prefix": "rtdash-realtime", "push_port": free_port(),
        "orders_applier_port": free_port(), "orders_realtime_topic": "orders.rows.e2e",
        "orders_realtime_batch_seconds": 10})
    runner = JobRunner(spark, settings, [orders_realtime.spec(microbatch_queries=1)])
    runner.start()
    try:
        with python_service(settings, "orders_applier", "jobs.orders_applier", settings.orders_applier_port), \
                python_service(settings, "push_server_realtime", "push_server", settings.push_port):
            yield settings
    finally:
        runner.stop()


def health(url: str) -> dict:
    with urllib.request.urlopen(url + "/healthz", timeout=5) as resp:
        return json.loads(resp.read())


async def connect_dashboard(settings):
    origin = f"http://127.0.0.1:{settings.push_port}"
    return await websocket_connect(HTTPRequest(ws_url(settings), headers={"Origin": origin}))


class BrokenStream(Exception):
    """The push server broke the protocol or closed the socket: no point waiting any longer."""


def record(latest: dict, message: str | None) -> None:
    """Keep `message` as its channel's latest envelope, checking the envelope and its order."""
    if message is None:
        raise BrokenStream("push server closed the WebSocket")
    envelope = json.loads(message)
    if not {"channel", "epoch", "seq", "data"} <= set(envelope) <= {"channel", "epoch", "seq", "snapshot", "data"}:
        raise BrokenStream(f"not an envelope: {envelope}")
    previous = latest.get(envelope["channel"])
    if previous is not None and previous["epoch"] == envelope["epoch"] and envelope["seq"] <= previous["seq"]:
        raise BrokenStream(f"seq must grow per channel: {previous['seq']} then {envelope['seq']}")
    latest[envelope["channel"]] = envelope


async def read_until(ws, latest: dict, predicate, *, timeout: float, what: str) -> dict:
    """Read envelopes into `latest` (channel -> envelope) until predicate(latest) holds."""
    async def next_envelope() -> bool:
        if predicate(latest):
            return True
        try:
            record(latest, await asyncio.wait_for(ws.read_message(), 1))
        except asyncio.TimeoutError:
            pass
        return predicate(latest)

    await eventually_async(next_envelope, timeout=timeout, interval=0, what=what)
    return latest


def today_in(settings) -> date:
    return datetime.now(settings.tz).date()


def shows_its_day(store, settings, not_before: date):
    """The dashboard shows the store's totals of the day it shows, a day not before `not_before`."""
    def check(latest: dict) -> bool:
        today = latest.get(ORDERS_TODAY)
        if today is None or today["data"]["date"] < not_before.isoformat():
            return False
        shown = (today["data"]["count"], today["data"]["amount_cents"])
        return shown == paid_on(store, today["data"]["date"], settings.tz)
    return check


async def post_raw(settings, body: bytes | str) -> tuple[int, bytes]:
    client = AsyncHTTPClient(force_instance=True)
    url = f"http://127.0.0.1:{settings.order_service_port}{NOTIFY_PATH}"
    try:
        resp = await client.fetch(url, method="POST", body=body, headers=FORM)
        return resp.code, resp.body
    except HTTPClientError as exc:
        return exc.code, exc.response.body if exc.response else b""
    finally:
        client.close()


def test_paid_orders_reach_the_dashboard_exactly(orders_path, ground_truth):
    stack_settings = orders_path

    async def scenario():
        first_day = today_in(stack_settings)
        ws = await connect_dashboard(stack_settings)
        latest: dict = {}
        # The snapshot comes first: the job writes today's zero totals when it starts.
        await read_until(ws, latest, lambda seen: ORDERS_TODAY in seen, timeout=30, what="today's snapshot")
        assert first_day.isoformat() <= latest[ORDERS_TODAY]["data"]["date"] <= today_in(stack_settings).isoformat()

        before_count, before_amount = ground_truth.paid_totals()   # other tests may have paid orders
        key = load_private_key(stack_settings.provider_private_key_path)
        simulator = PaymentSimulator(stack_settings, key, duplicate_share=0.25, seed=11)
        report = await simulator.run(rate=40, count=80)
        simulator.close()
        assert report.errors == 0 and report.refused == 0
        assert report.duplicates_sent > 5

        forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = notify_body(notify_params("FORGED1", 99_999, settings=stack_settings,
                                           paid_at=datetime.now(stack_settings.tz)), forger)
        assert (await post_raw(stack_settings, forged))[0] == 400
        malformed = urlencode({"out_trade_no": "BROKEN1", "total_amount": "ten yuan", "sign": "abc"})
        assert (await post_raw(stack_settings, malformed))[0] == 400
        never_placed = notify_body(notify_params("NEVERPLACED1", 99_999, settings=stack_settings,
                                                 paid_at=datetime.now(stack_settings.tz)), key)
        assert await post_raw(stack_settings, never_placed) == (404, b"fail: unknown order")

        count, amount = ground_truth.paid_totals()
        assert (count - before_count, amount - before_amount) == (report.accepted_orders,
                                                                  report.accepted_amount_cents)
        await read_until(ws, latest, shows_its_day(ground_truth, stack_settings, first_day), timeout=60,
                         what="the dashboard showing the stored orders of its day")
        ws.close()

    asyncio.run(scenario())


def test_orders_paid_while_kafka_is_down_are_counted_when_it_returns(orders_path, kafka, ground_truth):
    stack_settings = orders_path
    order_url = f"http://127.0.0.1:{stack_settings.order_service_port}"
    first_day = today_in(stack_settings)
    kafka.stop()
    try:
        report = pay(stack_settings, 15, seed=12)
        assert (report.accepted_orders, report.errors, report.refused) == (15, 0, 0)
        assert health(order_url)["outbox_pending"] >= 15
    finally:
        kafka.start()
        kafka.wait_healthy()

    async def dashboard_catches_up():
        ws = await connect_dashboard(stack_settings)
        await read_until(ws, {}, shows_its_day(ground_truth, stack_settings, first_day), timeout=150,
                         what="the dashboard counting the orders paid while Kafka was down")
        ws.close()

    asyncio.run(dashboard_catches_up())
    # The relay marks what Kafka acknowledged in one write every half second (or once the outbox
    # goes quiet), so the dashboard, a fast micro-batch away, can show an order before it is marked.
    eventually(lambda: health(order_url)["outbox_pending"] == 0, timeout=10, interval=0.1,
               what="the outbox marked published")
