"""Event content per route, privacy rules, and the in-process mixin (in-memory publisher double)."""
from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path

import tornado.web
from tornado.httputil import HTTPHeaders

from producers.gateway.events import (EventBuilder, Exchange, TrustedProxies, VisitorIds, load_visitor_secret,
                                      secret_query_name)
from producers.gateway.extractors import product_ids_from_json
from producers.gateway.mixin import GatewayEventMixin, gateway_events
from producers.gateway.publisher import MemoryPublisher
from rtdash.contracts import GatewayRequest, from_json, to_json
from rtdash.settings import Settings
from waiting import eventually

UA = "Mozilla/5.0 (X11; Linux x86_64) pytest"


def at_millis(event: GatewayRequest) -> GatewayRequest:
    """The event as it reads back from the wire (timestamps carry milliseconds)."""
    started = event.started_at
    return dataclasses.replace(event, started_at=started.replace(microsecond=started.microsecond // 1000 * 1000))


def test_search_event_has_term_product_ids_and_user(make_gateway):
    gw = make_gateway()
    resp, _ = gw.request("GET", "/search?q=cast+iron&q=ignored&page=2&page=3",
                         headers={"Authorization": "Bearer t0ken", "User-Agent": UA,
                                  "Referer": "http://shop.example/home", "Cookie": "shop_session=abc"})
    assert resp.status == 200
    event = gw.events()[0]
    assert isinstance(event, GatewayRequest)
    assert (event.method, event.path, event.route, event.status, event.source) == ("GET", "/search", "shop",
                                                                                   200, "proxy")
    assert event.query == {"q": ["cast iron", "ignored"], "page": ["2", "3"]}
    assert event.search_term == "cast iron"
    assert event.result_product_ids == ["P00001", "P00002", "P00003"]
    assert event.product_id is None
    assert event.user_id == "user0042"
    assert event.user_agent == UA and event.referrer == "http://shop.example/home"
    assert event.headers["Authorization"] == "[redacted]" and event.headers["Cookie"] == "[redacted]"
    assert event.client_ip is None
    assert event.request_bytes == 0 and event.response_bytes > 100
    assert event.total_ms > 0 and event.upstream_ms is not None and 0 <= event.upstream_ms <= event.total_ms
    assert abs(event.gateway_ms - (event.total_ms - event.upstream_ms)) < 0.01
    assert (datetime.now(timezone.utc) - event.started_at).total_seconds() < 5
    assert len(event.visitor_id) == 32 and len(event.request_id) == 32
    # Every field survives the wire format of the contract.
    assert from_json(GatewayRequest, to_json(event)) == at_millis(event)


def test_search_results_in_other_json_shapes(make_gateway):
    gw = make_gateway()
    for shape in ("results", "nested", "none"):
        gw.request("GET", f"/search?q=pan&shape={shape}")
    results, nested, none = gw.events(3)
    assert results.result_product_ids == ["P00001", "P00002", "P00003"]
    assert nested.result_product_ids == ["P00001", "P00002", "P00003"]
    assert none.result_product_ids is None and none.search_term == "pan"
    assert results.user_id is None


def test_product_page_event(make_gateway):
    gw = make_gateway()
    gw.request("GET", "/products/P00123")
    gw.request("GET", "/products/P99999")
    ok, missing = gw.events(2)
    assert ok.product_id == "P00123" and ok.status == 200 and ok.search_term is None
    assert missing.product_id == "P99999" and missing.status == 404


def test_extractors_see_only_what_they_need():
    assert product_ids_from_json(b'{"products": []}') == []
    assert product_ids_from_json(b'not json') is None
    assert product_ids_from_json(b'[{"id": 7}, {"id": "x"}]') == ["7", "x"]
    import gzip
    assert product_ids_from_json(gzip.compress(b'{"items": [{"id": "A"}]}'), "gzip") == ["A"]


def test_gzipped_search_reply_still_yields_ids(make_gateway, upstream):
    gw = make_gateway(routes=[("shop", "/", upstream)])
    from producers.gateway.extractors import SearchExtractor
    gw.app.gateway.builder.extractors.append(SearchExtractor(path="/gzip"))
    gw.request("GET", "/gzip?q=x")
    assert gw.events()[0].result_product_ids == ["P00007"]


def test_redaction_of_configured_headers(make_gateway):
    gw = make_gateway(gateway_redact_headers="X-Api-Key, X-Session")
    gw.request("GET", "/echo", headers={"X-Api-Key": "k", "x-session": "s", "Proxy-Authorization": "p",
                                        "X-Visible": "v"})
    headers = gw.events()[0].headers
    assert headers["X-Api-Key"] == headers["X-Session"] == headers["Proxy-Authorization"] == "[redacted]"
    assert headers["X-Visible"] == "v"
    assert "k" not in json.dumps(headers).replace("[redacted]", "")


def test_forwarding_headers_are_redacted_in_events_and_passed_on_unchanged(make_gateway):
    gw = make_gateway(trusted_proxies="127.0.0.1")
    _, body = gw.request("GET", "/echo", headers={
        "X-Forwarded-For": "203.0.113.9, 198.51.100.2", "Forwarded": "for=203.0.113.9;proto=https",
        "X-Real-IP": "203.0.113.9", "True-Client-IP": "203.0.113.9", "X-Forwarded-Host": "shop.example",
        "User-Agent": UA})
    event = gw.events()[0]
    headers = event.headers
    assert headers["X-Forwarded-For"] == headers["Forwarded"] == headers["X-Real-Ip"] == "[redacted]"
    assert headers["True-Client-Ip"] == "[redacted]"
    assert headers["X-Forwarded-Host"] == "shop.example"      # the site asked for, not the person
    assert event.client_ip is None
    wire = to_json(event).decode()
    assert "203.0.113.9" not in wire and "198.51.100.2" not in wire
    # The upstream still gets the chain, with the gateway's peer appended.
    echo = json.loads(body)
    assert [v for k, v in echo["headers"] if k == "X-Forwarded-For"] == ["203.0.113.9, 198.51.100.2, 127.0.0.1"]


def test_secret_query_values_are_redacted_names_kept(make_gateway):
    gw = make_gateway(gateway_redact_query="code, Coupon")
    referrer = "http://shop.example/reset?user=u1&token=t0p-s3cret&from=mail"
    _, body = gw.request(
        "GET", "/search?q=cast+iron&access_token=a1&apiKey=k1&apiKey=k2&password=p1&X-Amz-Signature=s1"
               "&sig=s2&session=s3&client_secret=s4&keyword=pan&code=c1&coupon=c2&page=2",
        headers={"User-Agent": UA, "Referer": referrer})
    event = gw.events()[0]
    assert event.query == {
        "q": ["cast iron"], "access_token": ["[redacted]"], "apiKey": ["[redacted]", "[redacted]"],
        "password": ["[redacted]"], "X-Amz-Signature": ["[redacted]"], "sig": ["[redacted]"],
        "session": ["[redacted]"], "client_secret": ["[redacted]"], "keyword": ["pan"],
        "code": ["[redacted]"], "coupon": ["[redacted]"], "page": ["2"]}
    assert event.search_term == "cast iron" and event.result_product_ids   # q is a search, not a secret
    assert event.referrer == event.headers["Referer"] == \
        "http://shop.example/reset?user=u1&token=[redacted]&from=mail"
    wire = to_json(event).decode()
    for secret in ("a1", "k1", "k2", "p1", "s1", "s2", "s3", "s4", "c1", "c2", "t0p-s3cret"):
        assert f'"{secret}"' not in wire and f"={secret}" not in wire, secret


def test_long_header_query_and_search_values_are_cut_with_a_marker(make_gateway):
    """One request cannot make a huge event: each header value, the query string and the search term
    keep at most RTDASH_GATEWAY_EVENT_MAX_CHARS characters, and say they were cut."""
    gw = make_gateway(gateway_event_max_chars=100)
    long_ua = "Mozilla/5.0 " + "u" * 5000
    query = "q=" + "pan" * 2000 + "&token=t1&page=" + "9" * 300 + "&after=the+cut"
    resp, _ = gw.request("GET", f"/search?{query}", headers={
        "User-Agent": long_ua, "X-Big": "b" * 20000, "X-Small": "fine",
        "Referer": "http://shop.example/?" + "r" * 3000, "Cookie": "c" * 5000})
    assert resp.status == 200
    event = gw.events()[0]
    cut = "…[truncated]"
    assert event.headers["X-Big"] == "b" * 100 + cut and event.headers["X-Small"] == "fine"
    assert event.user_agent == event.headers["User-Agent"] == long_ua[:100] + cut
    assert event.referrer == event.headers["Referer"] == ("http://shop.example/?" + "r" * 3000)[:100] + cut
    assert event.headers["Cookie"] == "[redacted]"
    # The query string is kept up to 100 characters: its first parameter, cut, and nothing after it.
    assert event.query == {"q": ["pan" * 32 + "pa" + cut]}
    assert event.search_term == ("pan" * 2000)[:100] + cut
    # The visitor id is the whole User-Agent's: the same as for a request that sent it whole.
    gw.request("GET", "/status/200", headers={"User-Agent": long_ua})
    assert gw.events(2)[1].visitor_id == event.visitor_id
    assert len(to_json(event)) < 2000


def test_a_query_cut_among_its_parameters_keeps_the_whole_ones_before(make_gateway):
    gw = make_gateway(gateway_event_max_chars=40)
    kept = "a=1&token=secret-value&b="
    gw.request("GET", "/echo?" + kept + "x" * 100 + "&c=3")
    event = gw.events()[0]
    assert event.query == {"a": ["1"], "token": ["[redacted]"], "b": ["x" * (40 - len(kept)) + "…[truncated]"]}
    assert "secret-value" not in to_json(event).decode()


def test_secret_query_names():
    secret = ["token", "access_token", "refreshToken", "apiKey", "api-key", "APIKEY", "AWSAccessKeyId", "key",
              "password", "passwd", "new_pwd", "secret", "client_secret", "signature", "X-Amz-Signature", "sig",
              "auth", "auth_code", "session", "sessionId", "PHPSESSID", "jsessionid", "X-Amz-Credential", "jwt"]
    clear = ["q", "page", "keyword", "monkey", "author", "design", "signup", "passenger", "bypass", "sort",
             "product_id", "utm_source"]
    assert [n for n in secret if not secret_query_name(n)] == []
    assert [n for n in clear if secret_query_name(n)] == []


def test_bot_flag_follows_the_traffic_rules(make_gateway):
    gw = make_gateway()
    googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    for agent in (googlebot, UA, "Mozilla/5.0 (compatible; YandexSpider/3.0)"):
        gw.request("GET", "/products/P00001", headers={"User-Agent": agent})
    gw.request("GET", "/products/P00001", headers={"User-Agent": ""})
    bot, browser, spider, blank = gw.events(4)
    assert (bot.bot, browser.bot, spider.bot, blank.bot) == (True, False, True, False)
    assert from_json(GatewayRequest, to_json(bot)).bot is True


def test_events_without_the_bot_flag_stay_valid(make_gateway):
    gw = make_gateway()
    gw.request("GET", "/products/P00001", headers={"User-Agent": UA})
    written = json.loads(to_json(gw.events()[0]))
    del written["bot"]                                 # as gateways wrote it before the flag
    older = from_json(GatewayRequest, json.dumps(written))
    assert older.bot is None and older.product_id == "P00001"


def test_client_ip_stored_only_when_allowed(make_gateway):
    assert make_gateway().request("GET", "/echo") and True
    gw = make_gateway(gateway_store_client_ip=True)
    gw.request("GET", "/echo", headers={"X-Forwarded-For": "203.0.113.9"})
    assert gw.events()[0].client_ip == "127.0.0.1"      # the peer is not a trusted proxy


def test_forwarded_for_trusted_only_from_configured_proxies(make_gateway):
    gw = make_gateway(gateway_store_client_ip=True, trusted_proxies="127.0.0.0/8, 10.0.0.5")
    gw.request("GET", "/echo", headers={"X-Forwarded-For": "203.0.113.9", "User-Agent": UA})
    gw.request("GET", "/echo", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9, 10.0.0.5",
                                        "User-Agent": UA})
    direct, chained = gw.events(2)
    assert direct.client_ip == "203.0.113.9"
    assert chained.client_ip == "203.0.113.9"            # 10.0.0.5 trusted, 198.51.100.1 spoofable
    assert direct.visitor_id == chained.visitor_id       # same client, same agent, same day


def test_trusted_proxies_unit():
    trusted = TrustedProxies(["10.0.0.0/8", "192.0.2.1"])
    assert trusted.client_ip("192.0.2.1", "203.0.113.7") == "203.0.113.7"
    assert trusted.client_ip("198.51.100.3", "203.0.113.7") == "198.51.100.3"
    assert trusted.client_ip("10.1.2.3", "garbage, 10.9.9.9") == "10.9.9.9"
    assert trusted.client_ip("10.1.2.3", None) == "10.1.2.3"
    assert trusted.client_ip("::ffff:10.1.1.1", "203.0.113.8") == "203.0.113.8"


def test_visitor_id_stable_within_a_day_and_different_across_days_and_secrets():
    tz = Settings(_env_file=None, timezone="Asia/Shanghai").tz
    ids = VisitorIds(b"secret-a", tz)
    morning = datetime(2026, 3, 1, 0, 30, tzinfo=timezone.utc)      # 08:30 in Shanghai
    evening = datetime(2026, 3, 1, 15, 30, tzinfo=timezone.utc)     # 23:30 in Shanghai
    next_day = datetime(2026, 3, 1, 16, 30, tzinfo=timezone.utc)    # 00:30 the next day there
    a = ids.visitor_id("203.0.113.9", UA, morning)
    assert a == ids.visitor_id("203.0.113.9", UA, evening)
    assert a != ids.visitor_id("203.0.113.9", UA, next_day)
    assert a != VisitorIds(b"secret-b", tz).visitor_id("203.0.113.9", UA, morning)
    assert a != ids.visitor_id("203.0.113.10", UA, morning)
    assert a != ids.visitor_id("203.0.113.9", UA + "x", morning)
    assert "203.0.113.9" not in a


def test_generated_visitor_secret_is_kept(tmp_path: Path):
    settings = Settings(_env_file=None, home=tmp_path)
    first = load_visitor_secret(settings)
    assert len(first) == 64 and load_visitor_secret(settings) == first
    assert (tmp_path / "keys" / "visitor_secret").stat().st_mode & 0o077 == 0
    assert load_visitor_secret(Settings(_env_file=None, home=tmp_path, visitor_secret="x")) == b"x"


def test_event_for_a_failed_upstream_and_a_broken_extractor(make_gateway):
    class Broken:
        needs_body = True

        def applies(self, route, path):
            return True

        def extract(self, **_):
            raise RuntimeError("boom")

    gw = make_gateway()
    gw.app.gateway.builder.extractors.insert(0, Broken())
    resp, _ = gw.request("GET", "/products/P00001")
    assert resp.status == 200
    assert gw.events()[0].product_id == "P00001"


# --- the in-process mixin -------------------------------------------------------------------------

class SearchPage(GatewayEventMixin):
    def get(self):
        self.set_header("X-User-Id", "user0007")
        self.finish({"query": self.get_query_argument("q"), "products": [{"id": "P00011"}, {"id": "P00012"}]})


class ProductPage(GatewayEventMixin):
    def get(self, product_id):
        self.write({"id": product_id})


def mixin_app(settings, publisher):
    return tornado.web.Application([(r"/search", SearchPage), (r"/products/([^/]+)", ProductPage)],
                                   **gateway_events(settings, publisher, route="shop"))


def test_mixin_emits_the_same_event_shape(loop_thread, make_gateway, upstream, tmp_path, support):
    settings = Settings(_env_file=None, home=tmp_path, visitor_secret="test-secret")
    publisher = MemoryPublisher()
    port = support.free_port()

    async def start():
        return mixin_app(settings, publisher).listen(port, address="127.0.0.1")

    server = loop_thread.run(start())
    try:
        support.http_call(port, "GET", "/search?q=pan", headers={"User-Agent": UA, "Cookie": "c=1"})
        support.http_call(port, "GET", "/products/P00077", headers={"User-Agent": UA})
        support.http_call(port, "HEAD", "/products/P00077", headers={"User-Agent": UA})
        gw = make_gateway()
        gw.request("GET", "/search?q=pan", headers={"User-Agent": UA, "Cookie": "c=1"})
        proxied = gw.events()[0]
        search, product, head = eventually(lambda: len(publisher.events) >= 3 and publisher.events[:3],
                                           timeout=5, interval=0.01, what="the mixin's three events")
    finally:
        async def stop():
            server.stop()
        loop_thread.run(stop())
    assert search.source == "in_process" and search.upstream_ms is None
    assert search.bot is False and proxied.bot is False
    assert search.route == "shop" and search.status == 200
    assert search.search_term == "pan" and search.result_product_ids == ["P00011", "P00012"]
    assert search.user_id == "user0007"
    assert search.headers["Cookie"] == "[redacted]"
    assert search.gateway_ms == search.total_ms > 0
    assert search.response_bytes > 20
    assert product.product_id == "P00077" and product.user_id is None
    assert head.response_bytes == 0 and head.method == "HEAD"
    # The same request described the same way by both: same visitor (same IP, agent, day, secret),
    # same request fields, the same redacted headers.
    same = ("method", "path", "route", "query", "status", "search_term", "visitor_id", "user_agent", "referrer",
            "client_ip", "bot")
    assert {f: getattr(search, f) for f in same} == {f: getattr(proxied, f) for f in same}
    assert search.headers["Cookie"] == proxied.headers["Cookie"] == "[redacted]"
    assert proxied.source == "proxy" and proxied.upstream_ms is not None
    assert from_json(GatewayRequest, to_json(search)) == at_millis(search)


def test_builder_is_one_function_for_both_sources():
    builder = EventBuilder(visitors=VisitorIds(b"s", Settings(_env_file=None).tz), trusted=TrustedProxies([]))
    headers = HTTPHeaders({"User-Agent": UA})
    common = dict(request_id="r", started_at=datetime(2026, 1, 1, tzinfo=timezone.utc), method="GET",
                  path="/products/P1", query="a=1&a=2", route="shop", status=200, request_bytes=0,
                  response_bytes=10, total_ms=3.0, peer_ip="192.0.2.1", request_headers=headers)
    proxy = builder.build(Exchange(**common, upstream_ms=2.0))
    inproc = builder.build(Exchange(**common, source="in_process"))
    assert proxy.gateway_ms == 1.0 and inproc.gateway_ms == 3.0
    assert proxy.query == inproc.query == {"a": ["1", "2"]}
    assert proxy.product_id == inproc.product_id == "P1"
    assert proxy.visitor_id == inproc.visitor_id
