"""Gateway overhead: the same request mix sent directly to the demo shop and through the gateway.

Starts, under a temporary RTDASH_HOME on free ports, a Kafka broker (unless
--no-kafka), the demo shop (``python -m producers.shop``) and the gateway
(``python -m producers.gateway``, publishing every event to the `gateway`
topic), each in its own process as in production. The load comes from
bench.loadgen in a separate process over keep-alive HTTP/1.1 with pre-built
requests: a browsing mix of product pages, searches, categories and the index
(all GET, every reply must be 200). Targets alternate (direct, gateway):

* closed loop, `--connections` clients for `--duration` s: throughput of each
  and the ratio (target: gateway >= 60% of direct);
* open loop at `--rate` requests/s (below both capacities): latency p50/p99 of
  each, measured from the scheduled send time, and the difference, the
  latency the gateway adds (target: p50 <= 1 ms).

At the end the gateway's own health shows how many events were published and
dropped. Prints a markdown table.

Usage:
    .venv/bin/python -m bench.gateway_overhead [--duration 10] [--rate 300] [--connections 16] [--no-kafka]
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench import loadgen
from producers.shop.catalogue import generate_catalogue
from rtdash.settings import Settings
from rtdash.kafka_admin import ensure_topics
from stack.kafka import kafka_service
from stack.probes import http_ok
from stack.services import python_service
from stack.testing import free_port

WORDS = ["cast iron", "skillet", "rustic", "steel", "lamp", "wooden", "chair", "cotton", "shirt", "granite",
         "ceramic", "mug", "leather", "bag", "copper", "kettle", "oak", "table", "wool", "blanket"]


def request_mix(host: str, count: int, seed: int = 7) -> list[bytes]:
    """Browsing traffic: 50% product pages, 30% searches, 10% categories, 10% index."""
    rnd = random.Random(seed)
    products = [p.id for p in generate_catalogue(2017, 1200)]
    headers = {"User-Agent": "Mozilla/5.0 (bench) gateway-overhead", "Accept": "application/json"}
    out = []
    for _ in range(count):
        roll = rnd.random()
        if roll < 0.5:
            path = f"/products/{rnd.choice(products)}"
        elif roll < 0.8:
            path = "/search?q=" + rnd.choice(WORDS).replace(" ", "+")
        elif roll < 0.9:
            path = "/categories"
        else:
            path = "/"
        out.append(loadgen.http_request("GET", path, host=host, headers=headers))
    return out


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def phase(label: str, port: int, mode: str, args, requests: list[bytes], rate: float = 0.0) -> loadgen.LoadResult:
    spec = loadgen.LoadSpec(host="127.0.0.1", port=port, mode=mode, duration=args.duration, warmup=args.warmup,
                            connections=args.connections if mode == "closed" else args.open_connections,
                            rate=rate, cycle=True, expect_status=200, expect_body=None)
    print(f"  {label} ({mode}{f', {rate:.0f}/s' if rate else ''}) ...", file=sys.stderr, flush=True)
    result = loadgen.run(spec, requests)
    if result.errors:
        print(f"    errors: {result.error_kinds}", file=sys.stderr)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="measured seconds per phase (default 10)")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured seconds before each phase")
    parser.add_argument("--connections", type=int, default=16, help="closed-loop clients (default 16)")
    parser.add_argument("--open-connections", type=int, default=32, help="open-loop connection pool")
    parser.add_argument("--rate", type=float, default=300, help="open-loop requests/s (default 300)")
    parser.add_argument("--no-kafka", action="store_true",
                        help="no broker: the gateway's queue fills and events are dropped (publishing cost not measured)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary RTDASH_HOME")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="rtdash-gw-bench-"))
    shop_port, gw_port = free_port(), free_port()
    settings = Settings(_env_file=None, home=home, kafka_port=free_port(), kafka_controller_port=free_port(),
                        shop_port=shop_port, gateway_port=gw_port, payment_provider_port=free_port(),
                        order_service_port=free_port(), kafka_heap="384m",
                        gateway_routes=f"shop=/=http://127.0.0.1:{shop_port}")
    services = []
    try:
        if not args.no_kafka:
            kafka = kafka_service(settings)
            services.append(kafka)
            print("starting kafka ...", file=sys.stderr, flush=True)
            kafka.start()
            kafka.wait_healthy()
            ensure_topics(settings, [settings.gateway_topic])
        shop = python_service(settings, "shop", "producers.shop", shop_port, ready_timeout=120)
        shop.argv += ["--users", "20"]
        gateway = python_service(settings, "gateway", "producers.gateway", gw_port)
        gateway.health = lambda: http_ok(f"http://127.0.0.1:{gw_port}/_gateway/healthz")
        for service in (shop, gateway):
            services.append(service)
            print(f"starting {service.name} ...", file=sys.stderr, flush=True)
            service.start()
            service.wait_healthy()

        requests = request_mix(f"127.0.0.1:{shop_port}", 20_000)
        closed = {"direct": phase("direct", shop_port, "closed", args, requests),
                  "gateway": phase("gateway", gw_port, "closed", args, requests)}
        opened = {"direct": phase("direct", shop_port, "open", args, requests, args.rate),
                  "gateway": phase("gateway", gw_port, "open", args, requests, args.rate)}
        time.sleep(1.0)
        health = get_json(f"http://127.0.0.1:{gw_port}/_gateway/healthz")["publisher"]
    finally:
        for service in reversed(services):
            service.stop()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
        else:
            print(f"kept {home}", file=sys.stderr)

    d, g = closed["direct"], closed["gateway"]
    od, og = opened["direct"], opened["gateway"]
    ratio = g.throughput / d.throughput if d.throughput else float("nan")
    add50, add99 = og.pct(50) - od.pct(50), og.pct(99) - od.pct(99)
    print(f"\nGateway overhead, {args.duration:g} s phases, closed loop {args.connections} connections, "
          f"open loop {args.rate:g} req/s; Kafka {'off' if args.no_kafka else 'on'}\n")
    print("| path | throughput (req/s) | closed p50 / p99 (ms) | open-loop p50 / p99 (ms) | errors |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, c, o in (("direct to shop", d, od), ("through gateway", g, og)):
        print(f"| {name} | {c.throughput:,.0f} | {c.pct(50):.2f} / {c.pct(99):.2f} | "
              f"{o.pct(50):.2f} / {o.pct(99):.2f} | {c.errors + o.errors} |")
    print("\n| figure | value | target |\n| --- | ---: | --- |")
    print(f"| gateway / direct throughput | {ratio:.0%} | >= 60% {'ok' if ratio >= 0.6 else 'MISSED'} |")
    print(f"| added latency p50 (open loop) | {add50:.2f} ms | <= 1 ms {'ok' if add50 <= 1.0 else 'MISSED'} |")
    print(f"| added latency p99 (open loop) | {add99:.2f} ms | |")
    print(f"| events published / dropped / queued | {health['published']} / {health['dropped']} / "
          f"{health['queue_depth']} | |")
    return 0 if d.errors + g.errors + od.errors + og.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
