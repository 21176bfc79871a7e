"""Payment notify: where it goes, how it is built, signed, verified and parsed (Alipay async-notify style).

The contract is in shared/DESIGN.md: the provider POSTs a form to
`NOTIFY_PATH`; the signature is SHA256withRSA (RSA2), base64, over every
other non-empty parameter sorted by name and joined as ``k=v&k=v`` with raw
(not URL-encoded) values; ``sign`` and ``sign_type`` are left out. The order
service verifies with the provider's public key before it looks at anything
else; the payment provider simulator (producers/provider) builds and signs
notifies with the private key. The key files themselves are rtdash/keys.py's.
"""
from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus, urlencode
from zoneinfo import ZoneInfo

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

if TYPE_CHECKING:
    from rtdash.settings import Settings

# Where the provider posts a notify: the order service's path, also the gateway's public one.
NOTIFY_PATH = "/order_center/order/alipay/callback"
# A notify is a form; the order service refuses any other Content-Type.
FORM_TYPE = "application/x-www-form-urlencoded"
FORM_HEADERS = {"Content-Type": f"{FORM_TYPE}; charset=utf-8"}
PAID_STATUSES = frozenset({"TRADE_SUCCESS", "TRADE_FINISHED"})
KNOWN_STATUSES = PAID_STATUSES | {"WAIT_BUYER_PAY", "TRADE_CLOSED"}
REQUIRED_FIELDS = ("out_trade_no", "trade_no", "total_amount", "trade_status",
                   "gmt_payment", "notify_id", "app_id", "sign_type", "sign")
# One yuan short of ten million: a single order above this is a bug, not a sale.
MAX_AMOUNT_CENTS = 999_999_999
# Field patterns, always applied with fullmatch: `re.match` with `$` would let a final "\n" through.
_AMOUNT = re.compile(r"(0|[1-9][0-9]{0,8})(\.[0-9]{1,2})?")
_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")
# gmt_payment: the provider's local time (settings.provider_timezone), without a zone of its own.
GMT_FORMAT = "%Y-%m-%d %H:%M:%S"
_GMT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")


class NotifyError(ValueError):
    """A notify that must be refused; the message is the reason sent back, with `status`."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.status = status


# A notify has a dozen parameters; a form with far more is not a notify.
MAX_FORM_FIELDS = 64


def form_params(body: bytes) -> dict[str, str]:
    """The parameters of an ``application/x-www-form-urlencoded`` notify body.

    Stricter than a general form parser, because a notify is signed over its
    parameters: a name given twice, or a body that is not a form at all, is
    refused rather than resolved one way or another. Written out rather than
    `urllib.parse.parse_qsl`, which unquotes every name and value even when
    there is nothing to unquote: this runs on every notify.
    """
    try:
        fields = body.decode("ascii").split("&")
        if len(fields) > MAX_FORM_FIELDS:
            raise NotifyError(f"more than {MAX_FORM_FIELDS} parameters")
        params: dict[str, str] = {}
        for field in fields:
            if not field:
                continue
            name, _, value = field.partition("=")
            if "%" in name or "+" in name:
                name = unquote_plus(name, errors="strict")
            if "%" in value or "+" in value:
                value = unquote_plus(value, errors="strict")
            if "%" in name or "=" in name:
                raise NotifyError("body is not a valid form")
            if name in params:
                raise NotifyError("a parameter appears twice")
            params[name] = value
    except UnicodeDecodeError as exc:  # not ASCII, or escapes that are not UTF-8
        raise NotifyError("body is not a valid form") from exc
    return params


def signing_string(params: dict[str, str]) -> str:
    """The text the signature covers: non-empty params but sign/sign_type, sorted."""
    items = sorted((k, v) for k, v in params.items()
                   if k not in ("sign", "sign_type") and v not in ("", None))
    return "&".join(f"{k}={v}" for k, v in items)


def sign(params: dict[str, str], private_key: rsa.RSAPrivateKey) -> str:
    signature = private_key.sign(signing_string(params).encode(), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode()


def signed(params: dict[str, str], private_key: rsa.RSAPrivateKey) -> dict[str, str]:
    """`params` with sign_type=RSA2 and its signature added, ready to post."""
    out = dict(params, sign_type="RSA2")
    out["sign"] = sign(out, private_key)
    return out


def verify(params: dict[str, str], public_key: rsa.RSAPublicKey) -> bool:
    """True only for a well-formed RSA2 signature by the provider's key."""
    if params.get("sign_type") != "RSA2" or not params.get("sign"):
        return False
    try:
        signature = base64.b64decode(params["sign"], validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        public_key.verify(signature, signing_string(params).encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def parse_amount_cents(text: str) -> int:
    """'12.30' yuan -> 1230 fen. Refuses negatives, zero, >2 decimals, exponents."""
    if not isinstance(text, str) or not _AMOUNT.fullmatch(text):
        raise NotifyError(f"total_amount {text!r} is not a yuan amount like 12.30")
    try:
        cents = int((Decimal(text) * 100).to_integral_exact())
    except InvalidOperation as exc:  # pragma: no cover - the regex already rules it out
        raise NotifyError(f"total_amount {text!r} is not a number") from exc
    if cents <= 0:
        raise NotifyError("total_amount must be positive")
    if cents > MAX_AMOUNT_CENTS:
        raise NotifyError("total_amount is too large")
    return cents


def format_amount(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


@dataclass(frozen=True)
class PaymentNotify:
    """A verified, parsed notify; money in cents, time as an aware datetime."""

    out_trade_no: str
    trade_no: str
    amount_cents: int
    trade_status: str
    paid_at: datetime
    notify_id: str

    @property
    def is_paid(self) -> bool:
        return self.trade_status in PAID_STATUSES


def parse_notify(params: dict[str, str], *, public_key: rsa.RSAPublicKey, app_id: str,
                 seller_id: str | None, tz: ZoneInfo) -> PaymentNotify:
    """Check a posted notify end to end; raises NotifyError with the reason.

    The signature is checked first so that nothing an attacker controls is
    interpreted before it is known to come from the provider. `tz` is the
    provider's zone (settings.provider_tz), in which gmt_payment is written.
    """
    if not params.get("sign"):
        raise NotifyError("missing sign")
    if not verify(params, public_key):
        raise NotifyError("bad signature")
    missing = [f for f in REQUIRED_FIELDS if not params.get(f)]
    if missing:
        raise NotifyError(f"missing fields: {', '.join(missing)}")
    if params["app_id"] != app_id:
        raise NotifyError("notify is for another app_id")
    if seller_id and params.get("seller_id") not in (None, "", seller_id):
        raise NotifyError("notify is for another seller_id")
    for field in ("out_trade_no", "trade_no", "notify_id"):
        if not _ID.fullmatch(params[field]):
            raise NotifyError(f"{field} must be 1-64 letters, digits, '_' or '-'")
    if params["trade_status"] not in KNOWN_STATUSES:
        raise NotifyError(f"unknown trade_status {params['trade_status']!r}")
    if not _GMT.fullmatch(params["gmt_payment"]):
        raise NotifyError("gmt_payment must look like 2026-11-26 17:54:54")
    try:  # fromisoformat rather than strptime: far cheaper, on every notify
        paid_at = datetime.fromisoformat(params["gmt_payment"]).replace(tzinfo=tz)
    except ValueError as exc:
        raise NotifyError("gmt_payment is not a valid date and time") from exc
    return PaymentNotify(
        out_trade_no=params["out_trade_no"], trade_no=params["trade_no"],
        amount_cents=parse_amount_cents(params["total_amount"]),
        trade_status=params["trade_status"], paid_at=paid_at, notify_id=params["notify_id"],
    )


# --- the provider's side: building a notify -------------------------------------------

def default_notify_url(settings: Settings) -> str:
    """The gateway's public notify path: where the provider reports the shop's payments by default."""
    return f"http://127.0.0.1:{settings.gateway_port}{NOTIFY_PATH}"


def notify_params(order_id: str, amount_cents: int, *, settings: Settings, paid_at: datetime,
                  status: str = "TRADE_SUCCESS") -> dict[str, str]:
    """The unsigned parameters of one notify (yuan as a decimal string, a new trade_no and notify_id)."""
    return {
        "out_trade_no": order_id,
        "trade_no": "2026" + uuid.uuid4().hex[:24],
        "total_amount": format_amount(amount_cents),
        "trade_status": status,
        "gmt_payment": paid_at.astimezone(settings.provider_tz).strftime(GMT_FORMAT),
        "notify_id": uuid.uuid4().hex,
        "app_id": settings.payment_app_id,
        "seller_id": settings.payment_seller_id,
    }


def notify_body(params: dict[str, str], private_key: rsa.RSAPrivateKey) -> bytes:
    """The form body the provider posts: `params` signed and urlencoded."""
    return urlencode(signed(params, private_key)).encode()
