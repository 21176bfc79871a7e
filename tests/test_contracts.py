"""One definition per event type: JSON and the Spark schema derive from it."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from rtdash.contracts import OrderPaid, from_json, required_fields, to_json

EVENT = OrderPaid(order_id="O1", trade_no="T1", amount_cents=1234,
                  paid_at=datetime(2026, 11, 26, 17, 54, 54, 123456, tzinfo=timezone.utc),
                  trade_status="TRADE_SUCCESS", notify_id="N1",
                  recorded_at=datetime(2026, 11, 26, 17, 54, 55, tzinfo=timezone.utc))


def test_json_round_trip_keeps_millisecond_utc():
    payload = to_json(EVENT)
    assert b'"paid_at":"2026-11-26T17:54:54.123Z"' in payload
    back = from_json(OrderPaid, payload)
    assert back.amount_cents == 1234
    assert back.paid_at == datetime(2026, 11, 26, 17, 54, 54, 123000, tzinfo=timezone.utc)


@pytest.mark.parametrize("payload,reason", [
    (b"{not json", "not JSON"), (b"[1]", "JSON object"),
    (b'{"order_id": "O1"}', "missing field"), (to_json(EVENT).replace(b'1234', b'"1234"'), "integer"),
])
def test_bad_payload_named(payload, reason):
    with pytest.raises(ValueError, match=reason):
        from_json(OrderPaid, payload)


def test_required_fields_are_all_fields_of_order_paid():
    assert required_fields(OrderPaid) == ["order_id", "trade_no", "amount_cents", "paid_at",
                                          "trade_status", "notify_id", "recorded_at"]


def test_naive_timestamp_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        to_json(OrderPaid(**{**EVENT.__dict__, "paid_at": datetime(2026, 1, 1)}))


def test_gateway_request_round_trips_with_optional_fields():
    from rtdash.contracts import GatewayRequest
    event = GatewayRequest(request_id="r1", started_at=EVENT.paid_at, method="GET", path="/search",
                           route="shop", query={"q": ["red shoes"]}, status=200, request_bytes=0,
                           response_bytes=512, total_ms=3.5, gateway_ms=0.4, visitor_id="v1",
                           source="proxy", search_term="red shoes", result_product_ids=["P1", "P2"])
    back = from_json(GatewayRequest, to_json(event))
    assert back.query == {"q": ["red shoes"]} and back.result_product_ids == ["P1", "P2"]
    assert back.user_id is None and back.total_ms == 3.5
    assert required_fields(GatewayRequest)[-1] == "source"


def test_spark_schema_derives_from_the_dataclass():
    pytest.importorskip("pyspark")
    from pyspark.sql import types as T
    from rtdash.contracts import GatewayRequest, spark_schema
    schema = {f.name: f.dataType for f in spark_schema(GatewayRequest).fields}
    assert schema["query"] == T.MapType(T.StringType(), T.ArrayType(T.StringType()))
    assert schema["total_ms"] == T.DoubleType() and schema["status"] == T.LongType()
    assert schema["started_at"] == T.TimestampType() and schema["result_product_ids"] == T.ArrayType(T.StringType())
    assert [f.name for f in spark_schema(OrderPaid).fields] == required_fields(OrderPaid)
