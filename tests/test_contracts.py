"""One definition per event type: JSON and the Spark schema derive from it, and `from_json` checks it strictly."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from rtdash.contracts import AlertStateChanged, GatewayRequest, OrderPaid, from_json, required_fields, to_json

EVENT = OrderPaid(order_id="O1", trade_no="T1", amount_cents=1234,
                  paid_at=datetime(2026, 11, 26, 17, 54, 54, 123456, tzinfo=timezone.utc),
                  trade_status="TRADE_SUCCESS", notify_id="N1",
                  recorded_at=datetime(2026, 11, 26, 17, 54, 55, tzinfo=timezone.utc))
WIRE = json.loads(to_json(EVENT))


def with_fields(**changes) -> bytes:
    """EVENT's JSON with `changes` (a value of ... drops the field)."""
    return json.dumps({k: v for k, v in {**WIRE, **changes}.items() if v is not ...}).encode()


def test_json_round_trip_keeps_millisecond_utc():
    payload = to_json(EVENT)
    assert b'"paid_at":"2026-11-26T17:54:54.123Z"' in payload
    back = from_json(OrderPaid, payload)
    assert back.amount_cents == 1234
    assert back.paid_at == datetime(2026, 11, 26, 17, 54, 54, 123000, tzinfo=timezone.utc)
    assert back.paid_at.utcoffset().total_seconds() == 0
    assert back == OrderPaid(**{**EVENT.__dict__, "paid_at": back.paid_at})


@pytest.mark.parametrize("payload,reason", [
    (b"{not json", "OrderPaid: Invalid JSON"),
    (b"[1]", "OrderPaid: Input should be an object"),
    (None, "OrderPaid: JSON input should be string, bytes or bytearray"),
    (b'{"order_id": "O1"}', "trade_no: Field required"),
    (with_fields(notify_id=...), "notify_id: Field required"),
    (with_fields(order_id=None), "order_id: Input should be a valid string"),
])
def test_bad_payload_named(payload, reason):
    with pytest.raises(ValueError, match=reason):
        from_json(OrderPaid, payload)


@pytest.mark.parametrize("changes,reason", [
    ({"amount_cents": "1234"}, "amount_cents: Input should be a valid integer"),
    ({"amount_cents": True}, "amount_cents: Input should be a valid integer"),
    ({"amount_cents": 12.5}, "amount_cents: Input should be a valid integer"),
    ({"order_id": 12}, "order_id: Input should be a valid string"),
    ({"paid_at": 1_795_542_894}, "paid_at: Value error, not an ISO-8601 timestamp"),
    ({"paid_at": "1795542894"}, "paid_at: Value error, not an ISO-8601 timestamp"),
    ({"paid_at": "26/11/2026 17:54"}, "paid_at: Value error, not an ISO-8601 timestamp"),
    ({"paid_at": "2026-11-31T17:54:54Z"}, "paid_at: Value error, not an ISO-8601 timestamp"),
])
def test_types_are_strict(changes, reason):
    with pytest.raises(ValueError, match=reason):
        from_json(OrderPaid, with_fields(**changes))


def test_every_problem_is_named_on_one_line():
    with pytest.raises(ValueError) as refused:
        from_json(OrderPaid, with_fields(amount_cents="1", trade_no=..., paid_at="yesterday"))
    assert str(refused.value).count(";") == 2 and "\n" not in str(refused.value)
    assert [part.split(":")[0] for part in str(refused.value).split("; ")] == ["trade_no", "amount_cents", "paid_at"]


def test_unknown_fields_are_ignored_and_a_number_field_takes_an_integer():
    back = from_json(OrderPaid, with_fields(coupon="X1"))
    assert back == from_json(OrderPaid, to_json(EVENT)) and not hasattr(back, "coupon")
    alert = from_json(AlertStateChanged, b'{"rule": "orders_drop", "state": "firing", "since": "2026-11-26T17:00:00Z",'
                                         b' "value": 3, "baseline": 40, "message": "m",'
                                         b' "evaluated_at": "2026-11-26T17:01:00Z"}')
    assert (alert.value, alert.baseline) == (3.0, 40.0) and isinstance(alert.value, float)
    with pytest.raises(ValueError, match="value: Input should be a valid number"):
        from_json(AlertStateChanged, b'{"rule": "r", "state": "firing", "since": "2026-11-26T17:00:00Z",'
                                     b' "value": true, "message": "m", "evaluated_at": "2026-11-26T17:01:00Z"}')


def test_optional_fields_may_be_missing():
    alert = from_json(AlertStateChanged, b'{"rule": "orders_drop", "state": "pending", "since": "2026-11-26T17:00:00Z",'
                                         b' "value": 0.5, "message": "m", "evaluated_at": "2026-11-26T17:01:00Z"}')
    assert alert.baseline is None and alert.evaluated_at == datetime(2026, 11, 26, 17, 1, tzinfo=timezone.utc)
    assert list(json.loads(to_json(alert))) == ["rule", "state", "since", "value", "baseline", "message",
                                               "evaluated_at"]


def test_required_fields_are_all_fields_of_order_paid():
    assert required_fields(OrderPaid) == ["order_id", "trade_no", "amount_cents", "paid_at",
                                          "trade_status", "notify_id", "recorded_at"]
    assert "baseline" not in required_fields(AlertStateChanged) and "value" in required_fields(AlertStateChanged)


def test_naive_timestamp_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        to_json(OrderPaid(**{**EVENT.__dict__, "paid_at": datetime(2026, 1, 1)}))


def test_gateway_request_round_trips_with_optional_fields():
    event = GatewayRequest(request_id="r1", started_at=EVENT.paid_at, method="GET", path="/search",
                           route="shop", query={"q": ["red shoes"]}, status=200, request_bytes=0,
                           response_bytes=512, total_ms=3.5, gateway_ms=0.4, visitor_id="v1",
                           source="proxy", search_term="red shoes", result_product_ids=["P1", "P2"])
    back = from_json(GatewayRequest, to_json(event))
    assert back.query == {"q": ["red shoes"]} and back.result_product_ids == ["P1", "P2"]
    assert back.user_id is None and back.total_ms == 3.5
    assert required_fields(GatewayRequest)[-1] == "source"
    with pytest.raises(ValueError, match=r"query\.q: Input should be a valid array"):
        from_json(GatewayRequest, to_json(event).replace(b'["red shoes"]', b'"red shoes"'))


def test_spark_schema_derives_from_the_dataclass():
    pytest.importorskip("pyspark")
    from pyspark.sql import types as T
    from rtdash.contracts import spark_schema
    schema = {f.name: f.dataType for f in spark_schema(GatewayRequest).fields}
    assert schema["query"] == T.MapType(T.StringType(), T.ArrayType(T.StringType()))
    assert schema["total_ms"] == T.DoubleType() and schema["status"] == T.LongType()
    assert schema["started_at"] == T.TimestampType() and schema["result_product_ids"] == T.ArrayType(T.StringType())
    assert [(f.name, f.dataType) for f in spark_schema(OrderPaid).fields] == [
        ("order_id", T.StringType()), ("trade_no", T.StringType()), ("amount_cents", T.LongType()),
        ("paid_at", T.TimestampType()), ("trade_status", T.StringType()), ("notify_id", T.StringType()),
        ("recorded_at", T.TimestampType())]
