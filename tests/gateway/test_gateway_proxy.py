"""Pass-through fidelity: what the client sends reaches the upstream, what the upstream sends reaches the client."""
from __future__ import annotations

import hashlib
import json
import logging
import socket
import time

from stack.testing import free_port


def echoed(body: bytes) -> dict:
    return json.loads(body)


def header_values(echo: dict, name: str) -> list[str]:
    return [v for k, v in echo["headers"] if k.lower() == name.lower()]


def test_get_with_repeated_query_keys_and_headers_unchanged(make_gateway):
    gw = make_gateway()
    resp, body = gw.request("GET", "/echo/a%20b?tag=x&tag=y&empty=&q=caf%C3%A9",
                            headers={"X-Custom": "v1", "User-Agent": "pytest-agent/1", "Accept": "text/plain"})
    assert resp.status == 200
    echo = echoed(body)
    assert echo["method"] == "GET"
    assert echo["uri"] == "/echo/a%20b?tag=x&tag=y&empty=&q=caf%C3%A9"
    assert header_values(echo, "X-Custom") == ["v1"]
    assert header_values(echo, "User-Agent") == ["pytest-agent/1"]
    assert header_values(echo, "Accept") == ["text/plain"]
    assert header_values(echo, "Host") == [f"127.0.0.1:{gw.port}"]
    assert header_values(echo, "X-Forwarded-For") == ["127.0.0.1"]
    assert header_values(echo, "X-Forwarded-Proto") == ["http"]
    assert len(header_values(echo, "X-Request-Id")[0]) == 32
    assert resp.getheader("X-Echo") == "1"


def test_forwarded_for_is_appended_and_request_id_kept(make_gateway):
    gw = make_gateway()
    _, body = gw.request("GET", "/echo", headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.2",
                                                  "X-Request-Id": "req-abc-123"})
    echo = echoed(body)
    assert header_values(echo, "X-Forwarded-For") == ["203.0.113.9, 198.51.100.2, 127.0.0.1"]
    assert header_values(echo, "X-Request-Id") == ["req-abc-123"]
    assert gw.events()[0].request_id == "req-abc-123"


def test_hop_by_hop_headers_are_not_forwarded(make_gateway):
    gw = make_gateway()
    _, body = gw.request("GET", "/echo", headers={"Connection": "keep-alive, X-Hop", "X-Hop": "secret",
                                                  "Keep-Alive": "timeout=5", "TE": "trailers",
                                                  "Proxy-Connection": "keep-alive", "X-End": "kept"})
    names = {k.lower() for k, _ in echoed(body)["headers"]}
    assert not names & {"x-hop", "keep-alive", "te", "proxy-connection"}
    assert "x-end" in names


def test_status_codes_pass_through(make_gateway):
    gw = make_gateway()
    for code in (200, 201, 404, 500, 418):
        resp, body = gw.request("GET", f"/status/{code}")
        assert resp.status == code
        assert body == f"status {code}\n".encode()
        assert resp.getheader("Content-Type") == "text/x-test"
        assert resp.getheader("ETag") == '"v1"'
    for code in (204, 304):
        resp, body = gw.request("GET", f"/status/{code}")
        assert resp.status == code and body == b""
        assert resp.getheader("ETag") == '"v1"'
    # The upstream's 200 stays a 200 even when the client's If-None-Match matches its ETag.
    resp, body = gw.request("GET", "/status/200", headers={"If-None-Match": '"v1"'})
    assert resp.status == 200 and body == b"status 200\n"


def test_multi_valued_response_headers_and_server_header_unchanged(make_gateway):
    gw = make_gateway()
    resp, body = gw.request("GET", "/cookies")
    assert body == b"cookies"
    assert resp.msg.get_all("Set-Cookie") == ["a=1; Path=/; HttpOnly", "b=2; Path=/"]
    assert resp.msg.get_all("X-Multi") == ["one", "two"]
    assert resp.getheader("Server") == "UpstreamServer/1.0"


def test_binary_and_compressed_bodies_are_byte_identical(make_gateway, support):
    gw = make_gateway()
    resp, body = gw.request("GET", "/binary?size=100000")
    assert body == support.binary_body(100000)
    assert resp.getheader("Content-Type") == "application/octet-stream"
    resp, body = gw.request("GET", "/gzip", headers={"Accept-Encoding": "gzip"})
    assert resp.getheader("Content-Encoding") == "gzip"
    assert body == support.GZIPPED


def test_five_megabytes_both_ways(make_gateway, support):
    gw = make_gateway()
    payload = support.binary_body(support.BIG)[::-1]
    resp, body = gw.request("PUT", "/echo/upload", body=payload,
                            headers={"Content-Type": "application/octet-stream"})
    echo = echoed(body)
    assert resp.status == 200
    assert echo["body_size"] == support.BIG
    assert echo["body_sha256"] == hashlib.sha256(payload).hexdigest()
    assert header_values(echo, "Content-Length") == [str(support.BIG)]
    resp, body = gw.request("GET", f"/binary?size={support.BIG}")
    assert len(body) == support.BIG and body == support.binary_body(support.BIG)
    event = gw.events(2)[0]
    assert event.request_bytes == support.BIG and gw.events(2)[1].response_bytes == support.BIG


def test_chunked_request_body(make_gateway):
    gw = make_gateway()
    parts = [b"alpha-" * 1000, b"\x00\xff" * 5000, b"omega"]
    resp, body = gw.request("POST", "/echo/chunked", body=iter(parts), encode_chunked=True,
                            headers={"Transfer-Encoding": "chunked", "Content-Type": "application/octet-stream"})
    echo = echoed(body)
    whole = b"".join(parts)
    assert echo["body_size"] == len(whole)
    assert echo["body_sha256"] == hashlib.sha256(whole).hexdigest()
    assert header_values(echo, "Transfer-Encoding") == ["chunked"]


def test_chunked_request_body_on_a_method_without_automatic_chunking(make_gateway):
    gw = make_gateway()
    parts = [b"one", b"two"]
    _, body = gw.request("DELETE", "/echo/x", body=iter(parts), encode_chunked=True,
                         headers={"Transfer-Encoding": "chunked"})
    assert echoed(body)["body_size"] == 6


def test_chunked_response_streams_through(make_gateway):
    gw = make_gateway()
    resp, body = gw.request("GET", "/chunked")
    assert resp.getheader("Transfer-Encoding") == "chunked"
    assert body == b"".join(f"part {i}\n".encode() * 1000 for i in range(5))


def test_head_and_other_methods(make_gateway):
    gw = make_gateway()
    resp, body = gw.request("HEAD", "/echo/h")
    assert resp.status == 200 and body == b""
    assert int(resp.getheader("Content-Length")) > 100      # the upstream's, for the body it did not send
    assert gw.request("HEAD", "/binary")[0].status == 405   # the upstream's answer, not the gateway's
    for method in ("POST", "PATCH", "DELETE", "OPTIONS"):
        resp, body = gw.request(method, "/echo/m", body=b"x=1" if method in ("POST", "PATCH") else None)
        assert resp.status == 200 and echoed(body)["method"] == method


def test_post_without_content_type_gets_none_added(make_gateway):
    gw = make_gateway()
    conn_body = b"raw"
    _, body = gw.request("POST", "/echo/p", body=conn_body, headers={"User-Agent": "ua"})
    echo = echoed(body)
    assert header_values(echo, "Content-Type") == []
    assert header_values(echo, "User-Agent") == ["ua"]


def test_longest_prefix_wins_and_no_route_is_404(make_gateway, upstream):
    gw = make_gateway(routes=[("api", "/echo/", upstream), ("api_v2", "/echo/v2/", upstream)])
    gw.request("GET", "/echo/v2/x")
    gw.request("GET", "/echo/v1/x")
    resp, body = gw.request("GET", "/elsewhere")
    assert resp.status == 404
    assert json.loads(body)["error"].startswith("no gateway route for /elsewhere")
    assert [e.route for e in gw.events(3)] == ["api_v2", "api", ""]
    assert gw.events(3)[2].status == 404


def test_keep_alive_connection_from_client_carries_many_requests(make_gateway):
    gw = make_gateway()
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    for i in range(20):
        conn.request("GET", f"/echo/{i}")
        resp = conn.getresponse()
        assert echoed(resp.read())["uri"] == f"/echo/{i}"
    conn.close()


def test_upstream_down_is_502_and_the_reply_does_not_reveal_where_the_upstream_is(make_gateway, caplog):
    down = f"127.0.0.1:{free_port()}"
    gw = make_gateway(routes=[("down", "/down/", f"http://{down}")])
    caplog.set_level(logging.WARNING, logger="rtdash.gateway")
    resp, body = gw.request("GET", "/down/anything")
    assert resp.status == 502
    doc = json.loads(body)
    assert doc == {"error": "the upstream is unavailable (connection refused)", "status": 502,
                   "request_id": doc["request_id"], "route": "down"}
    port = down.split(":")[1]
    assert b"127.0.0.1" not in body and port.encode() not in body
    assert resp.getheader("X-Request-Id") == doc["request_id"]
    event = gw.events()[0]
    assert event.status == 502 and event.route == "down"
    # The address is in the gateway's own log line, for its operator.
    said = [r.getMessage() for r in caplog.records if r.name == "rtdash.gateway"]
    assert any(down in line and "GET /down/anything via down: 502" in line for line in said), said
    health = json.loads(gw.request("GET", "/_gateway/healthz")[1])
    assert health["routes"] == [{"name": "down", "prefix": "/down/"}]


def test_upstream_slow_is_504_in_time(make_gateway):
    gw = make_gateway(gateway_upstream_timeout_seconds=0.3)
    t0 = time.monotonic()
    resp, body = gw.request("GET", "/slow?s=3")
    took = time.monotonic() - t0
    assert resp.status == 504
    assert json.loads(body)["error"] == "the upstream did not answer within 0.3s"
    assert b"127.0.0.1" not in body and gw.app.gateway.routes[0].upstream.netloc.encode() not in body
    assert took < 2
    # The gateway is fine afterwards.
    assert gw.request("GET", "/status/200")[0].status == 200


def test_client_that_disconnects_does_not_hurt_the_gateway(make_gateway, support):
    gw = make_gateway()
    sock = socket.create_connection(("127.0.0.1", gw.port))
    sock.sendall(b"GET /binary?size=5000000 HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.recv(1000)
    sock.close()
    # The gateway saw the client go: the request ended and its event says why.
    gone = gw.events()[0]
    assert gone.path == "/binary" and gone.extras == {"error": "client closed the connection"}
    resp, body = gw.request("GET", "/binary?size=1000")
    assert body == support.binary_body(1000)


def test_health_of_the_gateway_itself(make_gateway, support):
    gw = make_gateway()
    gw.request("GET", "/echo")
    resp, body = support.http_call(gw.port, "GET", "/_gateway/healthz")
    doc = json.loads(body)
    assert resp.status == 200 and doc["status"] == "ok"
    assert doc["publisher"] == gw.publisher.health()
    assert (doc["publisher"]["published"], doc["publisher"]["dropped"]) == (1, 0)      # the /echo, not itself
    assert [r["name"] for r in doc["routes"]][-1] == "shop"
