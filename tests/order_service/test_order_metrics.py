"""The order service's /metrics: both processes' counts merged (prometheus_client's multiprocess mode).

The real service (`python -m producers.order_service`, its HTTP process and
its store process) on free ports; Kafka is not needed: the relay points at a
closed port, so what is stored stays in the outbox, which /metrics shows as
the backlog. Each notify's result is counted where it is decided: the store
process for what reaches the intake, the HTTP process for what it refuses
itself.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import datetime, timezone
from urllib.parse import urlencode

from rtdash.keys import demo_keys, load_private_key
from rtdash.metrics import multiprocess_dir
from rtdash.payments import FORM_TYPE, NOTIFY_PATH, notify_params, signed
from rtdash.settings import Settings
from stack.services import python_service
from stack.testing import free_port

from scraping import samples, value, values

PAID_AT = datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)


def call(url: str, body: bytes | None = None, content_type: str = FORM_TYPE) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type} if body else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_metrics_merge_the_store_process_counts_with_the_http_process_ones(tmp_path):
    settings = Settings(_env_file=None, home=tmp_path, kafka_port=free_port(), order_service_port=free_port(),
                        order_service_internal_port=free_port())
    demo_keys(settings)
    key = load_private_key(settings.provider_private_key_path)
    stale = multiprocess_dir(settings.home, "order_service")
    stale.mkdir(parents=True)
    (stale / "counter_1.db").write_bytes(b"left by an earlier run")   # removed at start, not merged
    public = f"http://127.0.0.1:{settings.order_service_port}"
    internal = f"http://127.0.0.1:{settings.order_service_internal_port}/internal/orders"

    def notify(order_id: str, cents: int, **tampered: str) -> int:
        params = signed(notify_params(order_id, cents, settings=settings, paid_at=PAID_AT), key)
        return call(public + NOTIFY_PATH, urlencode({**params, **tampered}).encode())[0]

    with python_service(settings, "order_service", "producers.order_service", settings.order_service_port):
        for order_id in ("A", "B", "C"):
            assert call(internal, json.dumps({"order_id": order_id, "amount_cents": 100}).encode(),
                        "application/json")[0] == 201
        assert [notify("A", 100), notify("B", 100), notify("C", 100)] == [200, 200, 200]
        assert notify("A", 100) == 200                           # paid before
        assert notify("X", 100) == 404                           # never placed
        assert notify("B", 999) == 409                           # another amount
        assert notify("C", 100, total_amount="0.01") == 400      # the signature no longer holds
        assert call(public + NOTIFY_PATH)[0] == 405              # a GET: refused by the HTTP process
        status, text = call(public + "/metrics")
    assert status == 200
    found = samples(text)
    assert values(found, "rtdash_order_notifies_total", "result") == {
        "paid": 3, "duplicate": 1, "unknown_order": 1, "amount_differs": 1, "refused_signature": 1,
        "refused_request": 1}
    # one request at a time: every group holds one item (3 placed orders, 7 notifies that reached the intake)
    assert value(found, "rtdash_order_group_size_items_count") == 10
    assert value(found, "rtdash_order_group_size_items_sum") == 10
    assert value(found, "rtdash_order_group_size_items_bucket", le="1.0") == 10
    assert value(found, "rtdash_order_outbox_backlog_events") == 3   # Kafka is not there: all still waiting
    assert value(found, "rtdash_order_outbox_published_total") == 0
    assert value(found, "rtdash_order_kafka_connected") == 0
