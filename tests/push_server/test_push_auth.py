"""Who gets in: tokens on /ws, Host and Origin allow-lists, known channels, connection and message limits.

Real WebSockets against Tornado's test server (in-memory broker). A refusal
before the upgrade is an HTTP status with a JSON reason; a refusal after it is
a close code (push_server/__init__.py lists both).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time

import jwt
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.testing import AsyncHTTPTestCase, gen_test
from tornado.websocket import websocket_connect

from dashboard_tokens import SECRET, fixed_tokens, with_token
from push_server.app import make_app
from push_server.broker import MemoryBroker
from push_server.hub import Hub
from push_server.tokens import ALGORITHM, AUDIENCE, Tokens
from rtdash.channels import CHANNELS, ORDERS_PER_MINUTE, ORDERS_TODAY
from rtdash.settings import Settings
from waiting import eventually_async

ORIGIN = "http://dash.example:8080"


def channel_names_held(hub: Hub) -> set[str]:
    """Every channel name any of the hub's maps holds (whatever the maps are called)."""
    names: set[str] = set()
    for value in vars(hub).values():
        if isinstance(value, dict):
            names |= {key for key in value if isinstance(key, str)}
    return names


class AuthTestCase(AsyncHTTPTestCase):
    overrides: dict = {}
    leeway = 5.0

    def get_app(self):
        self.hub = Hub()
        self.broker = MemoryBroker(self.hub)
        self.tokens = fixed_tokens(self.leeway)
        self.settings = Settings(_env_file=None, **{
            "allowed_origins": ORIGIN, "push_port": self.get_http_port(), "push_token_secret": SECRET,
            "push_max_messages_per_second": 200, **self.overrides})
        return make_app(self.settings, self.hub, self.broker, tokens=self.tokens)

    def ws_request(self, token: str | None = "", *, origin: str | None = ORIGIN, host: str | None = None,
                   **issue) -> HTTPRequest:
        url = self.get_url("/ws").replace("http", "ws")
        if token == "":
            token = self.tokens.issue(**issue)
        if token is not None:
            url = with_token(url, token)
        headers = {"Origin": origin} if origin else {}
        if host:
            headers["Host"] = host
        return HTTPRequest(url, headers=headers)

    async def connect(self, token: str | None = "", **kwargs):
        return await websocket_connect(self.ws_request(token, **kwargs))

    async def refused(self, token: str | None = "", **kwargs) -> int:
        """The HTTP status /ws answers instead of upgrading (fails if it upgrades)."""
        with self.assertRaises(HTTPClientError) as refusal:
            ws = await self.connect(token, **kwargs)
            ws.close()
        return refusal.exception.code

    async def reason(self, token: str | None, **headers) -> dict:
        """The JSON reason of a refusal, as a plain GET of /ws shows it."""
        url = self.get_url("/ws" if token is None else with_token("/ws", token))
        response = await self.http_client.fetch(url, headers=headers, raise_error=False)
        assert response.headers["Content-Type"].startswith("application/json")
        return {"status": response.code, **json.loads(response.body)}

    async def clients(self, count: int) -> None:
        await eventually_async(lambda: self.hub.clients == count, timeout=5, interval=0.01,
                               what=f"{count} clients in the hub")

    async def closed_with(self, ws, timeout: float = 10) -> tuple[int | None, str | None]:
        while await asyncio.wait_for(ws.read_message(), timeout) is not None:
            pass
        return ws.close_code, ws.close_reason


class TokenTest(AuthTestCase):
    @gen_test
    async def test_no_token_is_refused_before_the_upgrade(self):
        assert await self.refused(None) == 401
        assert await self.refused("%20") == 401          # empty after decoding
        assert self.hub.clients == 0

    @gen_test
    async def test_a_refusal_says_why(self):
        assert (await self.reason(None))["error"] == "token missing"
        expired = self.tokens.issue(ttl=60, now=time.time() - 3600)
        assert await self.reason(expired) == {"status": 401, "error": "token expired",
                                        "detail": "get a new one (`rtdash token`)"}
        assert (await self.reason("not-a-token"))["error"] == "token invalid"
        response = await self.http_client.fetch(self.get_url("/ws"), raise_error=False)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")

    @gen_test
    async def test_expired_token_is_refused(self):
        assert await self.refused(self.tokens.issue(ttl=60, now=time.time() - 3600)) == 401
        assert self.hub.clients == 0

    @gen_test
    async def test_wrongly_signed_malformed_or_unsigned_tokens_are_refused(self):
        now = int(time.time())
        claims = {"aud": AUDIENCE, "iat": now, "exp": now + 3600, "channels": ["*"]}
        other_secret = Tokens(b"another-secret-of-at-least-32-bytes!!").issue()
        unsigned = jwt.encode(claims, None, algorithm="none")
        header, payload, signature = self.tokens.issue(channels=[ORDERS_TODAY]).split(".")
        widened = jwt.encode(claims, "x" * 32, algorithm=ALGORITHM).split(".")[1]
        for token in (other_secret, unsigned, f"{header}.{widened}.{signature}", "abc.def.ghi", "x" * 300,
                      jwt.encode({**claims, "aud": "something-else"}, SECRET, algorithm=ALGORITHM),
                      jwt.encode({k: v for k, v in claims.items() if k != "channels"}, SECRET, algorithm=ALGORITHM),
                      jwt.encode({**claims, "channels": "orders.today"}, SECRET, algorithm=ALGORITHM),
                      jwt.encode(claims, SECRET, algorithm="HS512")):
            assert await self.refused(token) == 401, token
            assert (await self.reason(token))["error"] == "token invalid", token
        assert self.hub.clients == 0

    @gen_test
    async def test_a_valid_token_opens_and_no_origin_is_judged_by_the_token_alone(self):
        ws = await self.connect()
        await self.clients(1)
        assert [self.hub.subscriptions(s) for s in self.hub.sessions()] == [{"*"}]
        ws.close()
        await self.clients(0)
        ws = await self.connect(origin=None)             # not a browser: the token decides
        await self.clients(1)
        ws.close()
        assert await self.refused(None, origin=None) == 401

    @gen_test
    async def test_auth_check_says_what_a_token_allows(self):
        token = self.tokens.issue(ttl=600, channels=[ORDERS_TODAY], subject="ops")
        response = await self.http_client.fetch(self.get_url("/auth/check"),
                                                headers={"Authorization": f"Bearer {token}"})
        body = json.loads(response.body)
        assert body["sub"] == "ops" and body["channels"] == [ORDERS_TODAY]
        assert abs(body["expires_at"] - (time.time() + 600)) < 5
        for headers in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": f"Basic {token}"}):
            with self.assertRaises(HTTPClientError) as refusal:
                await self.http_client.fetch(self.get_url("/auth/check"), headers=headers)
            assert refusal.exception.code == 401

    def test_the_access_log_never_shows_a_token(self):
        token = self.tokens.issue(ttl=60, now=time.time() - 3600)
        with self.assertLogs("tornado.access", logging.INFO) as logs:
            assert self.fetch(with_token("/ws", token)).code == 401
        assert any("token=[redacted]" in line for line in logs.output), logs.output
        assert not any(token in line for line in logs.output), logs.output


class ExpiryTest(AuthTestCase):
    leeway = 0.0

    @gen_test(timeout=20)
    async def test_a_token_expiring_on_an_open_connection_closes_it_with_4001(self):
        ws = await self.connect(ttl=2)
        await self.clients(1)
        assert await self.closed_with(ws) == (4001, "token expired")
        await self.clients(0)


class OriginAndHostTest(AuthTestCase):
    @gen_test
    async def test_foreign_origin_is_refused_even_with_a_token(self):
        for foreign in ("http://evil.example", "http://dash.example:9999", "https://dash.example:8080", "null",
                        f"http://127.0.0.1:{self.get_http_port()}"):
            assert await self.refused(origin=foreign) == 403, foreign
        assert await self.reason(self.tokens.issue(), Origin="http://evil.example") == {
            "status": 403, "error": "origin not allowed",
            "detail": "open the dashboard at an address in RTDASH_ALLOWED_ORIGINS"}
        assert self.hub.clients == 0
        for allowed in (ORIGIN, "HTTP://Dash.Example:8080/"):
            ws = await self.connect(origin=allowed)
            await self.clients(1)
            ws.close()
            await self.clients(0)

    @gen_test
    async def test_foreign_host_is_refused_for_the_socket_and_the_page(self):
        port = self.get_http_port()
        # DNS rebinding: the attacker's name resolves to this server; the page and its socket name it.
        for foreign in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", f"localhost.:{port}"):
            assert await self.refused(host=foreign, origin=None) == 403, foreign
            page = await self.http_client.fetch(self.get_url("/"), headers={"Host": foreign}, raise_error=False)
            assert page.code == 403, foreign
            assert json.loads(page.body)["error"] == "host not allowed"
        assert self.hub.clients == 0
        for allowed in (f"127.0.0.1:{port}", f"LOCALHOST:{port}"):
            ws = await self.connect(host=allowed)
            await self.clients(1)
            ws.close()
            await self.clients(0)
            page = await self.http_client.fetch(self.get_url("/"), headers={"Host": allowed}, raise_error=False)
            assert page.code != 403, allowed


class ChannelTest(AuthTestCase):
    async def error_for(self, ws, channels: list[str]) -> dict:
        await ws.write_message(json.dumps({"subscribe": channels}))
        return json.loads(await asyncio.wait_for(ws.read_message(), 5))

    def subscriptions(self) -> list[set[str]]:
        return [self.hub.subscriptions(s) for s in self.hub.sessions()]

    @gen_test
    async def test_an_unknown_channel_is_refused_and_leaves_nothing_behind(self):
        ws = await self.connect()
        await self.clients(1)
        held = channel_names_held(self.hub)
        assert await self.error_for(ws, ["made.up"]) == {"error": "unknown channel", "channel": "made.up"}
        # The subscribe is taken whole or not at all: the known name beside an unknown one changes nothing.
        assert await self.error_for(ws, [ORDERS_TODAY, "made.up.2"]) == {"error": "unknown channel",
                                                                          "channel": "made.up.2"}
        assert self.subscriptions() == [{"*"}]
        for round_ in range(50):                          # many made-up names, again and again
            names = [f"bogus.{round_}.{i}" for i in range(40)]
            assert (await self.error_for(ws, names))["channel"] == names[0]
        assert channel_names_held(self.hub) == held
        assert channel_names_held(self.hub) <= {*CHANNELS, "*"}
        assert self.subscriptions() == [{"*"}]
        await ws.write_message(json.dumps({"subscribe": [ORDERS_TODAY]}))   # the connection stays usable
        await eventually_async(lambda: self.subscriptions() == [{ORDERS_TODAY}], timeout=5, interval=0.01,
                               what="the known channel subscribed")
        ws.close()
        await self.clients(0)
        assert channel_names_held(self.hub) <= {*CHANNELS, "*"}

    @gen_test
    async def test_a_channel_outside_the_token_is_refused(self):
        ws = await self.connect(channels=[ORDERS_TODAY])
        await self.clients(1)
        assert self.subscriptions() == [{ORDERS_TODAY}]   # by default: the token's channels, not all
        for channels in ([ORDERS_PER_MINUTE], [ORDERS_TODAY, ORDERS_PER_MINUTE], ["*"]):
            assert await self.error_for(ws, channels) == {"error": "channel not allowed",
                                                          "channel": channels[-1]}
            assert self.subscriptions() == [{ORDERS_TODAY}]
        await ws.write_message(json.dumps({"subscribe": [ORDERS_TODAY]}))
        ws.close()
        await self.clients(0)


class PerAddressLimitTest(AuthTestCase):
    overrides = {"push_max_connections_per_address": 2}

    @gen_test
    async def test_the_connection_beyond_the_per_address_limit_is_closed_with_4029(self):
        first, second = await self.connect(), await self.connect()
        await self.clients(2)
        third = await self.connect()
        assert await self.closed_with(third) == (4029, "too many connections from this address")
        assert self.hub.clients == 2
        first.close()
        await self.clients(1)
        again = await self.connect()                      # a freed slot is free again
        await self.clients(2)
        for ws in (second, again):
            ws.close()
        await self.clients(0)


class TotalLimitTest(AuthTestCase):
    overrides = {"push_max_connections": 2}

    @gen_test
    async def test_the_connection_beyond_the_total_limit_is_closed_with_1013(self):
        first, second = await self.connect(), await self.connect()
        await self.clients(2)
        assert await self.closed_with(await self.connect()) == (1013, "server full")
        for ws in (first, second):
            ws.close()
        await self.clients(0)
        last = await self.connect()
        await self.clients(1)
        last.close()


class MessageRateTest(AuthTestCase):
    overrides = {"push_max_messages_per_second": 5}

    @gen_test
    async def test_a_client_over_the_message_rate_is_closed_with_4008(self):
        ws = await self.connect()
        await self.clients(1)
        for _ in range(30):
            await ws.write_message(json.dumps({"subscribe": [ORDERS_TODAY]}))
        assert await self.closed_with(ws) == (4008, "too many messages")
        await self.clients(0)
