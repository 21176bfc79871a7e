"""Signature verification and money parsing of the payment notify contract."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from rtdash.payments import (NotifyError, form_params, format_amount, notify_params, parse_amount_cents,
                             parse_notify, sign, signed, signing_string, verify)
from rtdash.settings import Settings

UTC = ZoneInfo("UTC")
PARAMS = {
    "out_trade_no": "ORDER0001", "trade_no": "2026112622001", "total_amount": "88.50",
    "trade_status": "TRADE_SUCCESS", "gmt_payment": "2026-11-26 17:54:54", "notify_id": "n0001",
    "app_id": "2021000000000001", "seller_id": "2088000000000001",
}


@pytest.fixture(scope="module")
def provider_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def parse(params, key):
    return parse_notify(params, public_key=key.public_key(), app_id="2021000000000001",
                        seller_id="2088000000000001", tz=UTC)


def test_signing_string_sorts_skips_empty_and_sign_fields():
    text = signing_string({"b": "2", "a": "1", "empty": "", "sign": "x", "sign_type": "RSA2", "c": "a b"})
    assert text == "a=1&b=2&c=a b"


def test_valid_signature_verifies_and_parses(provider_key):
    notify = parse(signed(PARAMS, provider_key), provider_key)
    assert notify.out_trade_no == "ORDER0001"
    assert notify.amount_cents == 8850
    assert notify.paid_at == datetime(2026, 11, 26, 17, 54, 54, tzinfo=UTC)
    assert notify.is_paid


@pytest.mark.parametrize("field,value", [("total_amount", "0.01"), ("out_trade_no", "ORDER0002"),
                                         ("trade_status", "TRADE_FINISHED"), ("extra", "added")])
def test_tampered_field_fails(provider_key, field, value):
    params = signed(PARAMS, provider_key)
    params[field] = value
    assert not verify(params, provider_key.public_key())
    with pytest.raises(NotifyError, match="bad signature"):
        parse(params, provider_key)


def test_wrong_key_fails(provider_key, other_key):
    params = signed(PARAMS, other_key)
    assert verify(params, other_key.public_key())
    with pytest.raises(NotifyError, match="bad signature"):
        parse(params, provider_key)


def test_missing_or_garbled_sign_fails(provider_key):
    params = signed(PARAMS, provider_key)
    with pytest.raises(NotifyError, match="missing sign"):
        parse({k: v for k, v in params.items() if k != "sign"}, provider_key)
    with pytest.raises(NotifyError, match="bad signature"):
        parse(dict(params, sign="not base64 !!"), provider_key)
    with pytest.raises(NotifyError, match="bad signature"):
        parse(dict(params, sign_type="RSA"), provider_key)


def test_signature_over_empty_params_ignores_them(provider_key):
    params = signed(dict(PARAMS, buyer_id=""), provider_key)
    params.pop("buyer_id")
    assert verify(params, provider_key.public_key())


def test_missing_field_is_named(provider_key):
    params = {k: v for k, v in PARAMS.items() if k != "notify_id"}
    with pytest.raises(NotifyError, match="missing fields: notify_id"):
        parse(signed(params, provider_key), provider_key)


@pytest.mark.parametrize("params,reason", [
    (dict(PARAMS, app_id="2021999"), "another app_id"),
    (dict(PARAMS, seller_id="2088999"), "another seller_id"),
    (dict(PARAMS, trade_status="PAID_MAYBE"), "unknown trade_status"),
    (dict(PARAMS, gmt_payment="yesterday"), "gmt_payment"),
    (dict(PARAMS, out_trade_no="a" * 65), "out_trade_no"),
    (dict(PARAMS, total_amount="-1.00"), "total_amount"),
])
def test_signed_but_invalid_notify_refused(provider_key, params, reason):
    with pytest.raises(NotifyError, match=reason):
        parse(signed(params, provider_key), provider_key)


def test_unpaid_status_parses_but_is_not_paid(provider_key):
    assert not parse(signed(dict(PARAMS, trade_status="WAIT_BUYER_PAY"), provider_key), provider_key).is_paid


@pytest.mark.parametrize("text,cents", [("0.01", 1), ("1", 100), ("12.3", 1230), ("12.30", 1230),
                                        ("9999999.99", 999999999), ("100.05", 10005)])
def test_amount_parses_to_exact_cents(text, cents):
    assert parse_amount_cents(text) == cents
    assert parse_amount_cents(format_amount(cents)) == cents


@pytest.mark.parametrize("text", ["", "0", "0.00", "-1", "1.234", "1e3", "01.00", " 1.00", "1,00", "abc",
                                  "10000000.00", "NaN", "1.", "1.00\n", "1\n"])
def test_bad_amount_refused(text):
    with pytest.raises(NotifyError):
        parse_amount_cents(text)


def test_sign_is_deterministic_pkcs1(provider_key):
    # PKCS#1 v1.5 signatures are deterministic: the same params give the same sign.
    assert sign(PARAMS, provider_key) == sign(dict(PARAMS), provider_key)


def test_form_params_decodes_like_a_form_and_round_trips_urlencode():
    from urllib.parse import urlencode
    params = {"gmt_payment": "2026-11-26 17:54:54", "sign": "ab+/cd==", "subject": "\u6d4b\u8bd5 & more",
              "empty": "", "plain": "ORDER-1_x"}
    assert form_params(urlencode(params).encode()) == params
    assert form_params(b"a=1&&b=x+y&flag") == {"a": "1", "b": "x y", "flag": ""}
    assert form_params(b"") == {}


@pytest.mark.parametrize("body, reason", [
    (b"%%%not a form", "not a valid form"),
    (b"a%3Db=1", "not a valid form"),                      # '=' inside a name
    (b"a=1&a=1", "appears twice"),
    (b"a=1&b=2&a%20=3&a=4", "appears twice"),
    ("a=\u00e9".encode(), "not a valid form"),               # not ASCII: not urlencoded
    (b"a=%ff%fe", "not a valid form"),                      # escapes that are not UTF-8
    (b"&".join(b"p%d=1" % i for i in range(65)), "more than 64 parameters"),
])
def test_form_params_refuses_what_is_not_a_notify_form(body, reason):
    with pytest.raises(NotifyError, match=reason):
        form_params(body)


@pytest.mark.parametrize("field,value", [("out_trade_no", "A123\n"), ("trade_no", "2026112622001\n"),
                                         ("notify_id", "n0001\n"), ("total_amount", "1.00\n"),
                                         ("gmt_payment", "2026-11-26 17:54:54\n")])
def test_a_final_newline_is_not_part_of_a_field(provider_key, field, value):
    """Fields are matched whole: `$` in a pattern would let a final newline through."""
    with pytest.raises(NotifyError, match=field) as refused:
        parse(signed(dict(PARAMS, **{field: value}), provider_key), provider_key)
    assert refused.value.status == 400


def test_gmt_payment_is_the_providers_local_time_not_the_dashboards():
    """Alipay writes gmt_payment in Beijing time; the dashboard's zone (here UTC) plays no part."""
    settings = Settings(_env_file=None, timezone="UTC")
    assert settings.provider_timezone == "Asia/Shanghai"
    midnight_utc = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
    params = notify_params("ORDER0001", 100, settings=settings, paid_at=midnight_utc)
    assert params["gmt_payment"] == "2026-11-30 08:00:00"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    notify = parse_notify(signed(params, key), public_key=key.public_key(), app_id=settings.payment_app_id,
                          seller_id=settings.payment_seller_id, tz=settings.provider_tz)
    assert notify.paid_at == midnight_utc
    with pytest.raises(ValueError, match="unknown time zone"):
        Settings(_env_file=None, provider_timezone="Mars/Olympus")
