"""The services of `rtdash up`: Redis, rtdash's own Python processes, and the list in start order.

Kafka is defined in `stack.kafka`. Every Python service is `python -m <module>` with
the stack's settings in its environment, healthy once its health URL answers 200.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from rtdash.settings import Settings

from .kafka import kafka_service
from .probes import http_ok, redis_ready
from .runner import Service, StackError


def redis_service(settings: Settings, *, persist: bool = True) -> Service:
    """Debian's redis-server on the settings' port; `persist=False` keeps nothing on disk (tests)."""
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    data = (settings.home / "redis").resolve()

    def prepare() -> None:
        if not Path(server).exists():
            raise StackError("redis-server not found: run `make setup` (installs Debian's redis-server)")
        data.mkdir(parents=True, exist_ok=True)

    argv = [server, "--port", str(settings.redis_port), "--bind", settings.bind_host, "--dir", str(data),
            "--protected-mode", "yes", "--daemonize", "no", "--logfile", ""]
    argv += ["--appendonly", "yes", "--save", "60 1000"] if persist else ["--appendonly", "no", "--save", ""]
    return Service("redis", argv, settings.logs_dir / "redis.log", prepare=prepare,
                   health=lambda: redis_ready(settings.redis), address=settings.redis, ready_timeout=20)


def python_service(settings: Settings, name: str, module: str, port: int, ready_timeout: float = 30,
                   health_path: str = "/healthz", args: list[str] | None = None) -> Service:
    """`python -m module` with the settings in its environment, healthy when `health_path` answers 200."""
    url = f"http://{settings.bind_host}:{port}"
    return Service(name, [sys.executable, "-m", module, *(args or [])], settings.logs_dir / f"{name}.log",
                   env=settings.child_env() | {"PYTHONUNBUFFERED": "1"},
                   health=lambda: http_ok(url + health_path), address=url, ready_timeout=ready_timeout)


def local_stack(settings: Settings) -> list[Service]:
    """Every service of `rtdash up`, in start order (each one's dependencies come first)."""
    return [
        kafka_service(settings),
        redis_service(settings),
        python_service(settings, "order_service", "producers.order_service", settings.order_service_port),
        python_service(settings, "payment_provider", "producers.provider", settings.payment_provider_port),
        python_service(settings, "sms_gateway", "producers.sms_gateway", settings.sms_gateway_port),
        python_service(settings, "notifier", "producers.notifier", settings.notifier_health_port),
        python_service(settings, "shop", "producers.shop", settings.shop_port, ready_timeout=90),
        # Its clients are local (the traffic simulator sends each synthetic visitor's address in
        # X-Forwarded-For): trust loopback, unless RTDASH_TRUSTED_PROXIES says otherwise (even empty).
        python_service(settings if "trusted_proxies" in settings.model_fields_set
                       else settings.model_copy(update={"trusted_proxies": ["127.0.0.1", "::1"]}),
                       "gateway", "producers.gateway", settings.gateway_port, health_path="/_gateway/healthz"),
        # one Spark application: the orders, traffic and alert queries (jobs/__main__.py)
        python_service(settings, "spark_jobs", "jobs", settings.jobs_health_port, ready_timeout=180),
        *realtime_orders(settings),
        *push_servers(settings),
    ]


def realtime_orders(settings: Settings) -> list[Service]:
    """In the `realtime` orders mode, the real-time query's own Spark application (jobs/orders_realtime.py) and
    the applier of its rows (jobs/orders_applier.py), the one writer of orders.today and orders.per_minute then.
    None in `microbatch`, where the orders query of the `spark_jobs` application writes them."""
    if settings.orders_mode != "realtime":
        return []
    return [python_service(settings, "orders_realtime", "jobs.orders_realtime", settings.orders_realtime_health_port,
                           ready_timeout=180),
            python_service(settings, "orders_applier", "jobs.orders_applier", settings.orders_applier_port)]


def push_servers(settings: Settings) -> list[Service]:
    """RTDASH_PUSH_SERVERS push server processes on the one Redis: ``push_server`` on push_port, then
    ``push_server_2`` on push_port + 1, and so on. Each gets its own port in its settings (so its default
    origins and hosts are its own address); every envelope, epoch and history comes from Redis, so a client
    may reconnect to any of them and resume."""
    services = []
    for index in range(settings.push_servers):
        own = settings if index == 0 else settings.model_copy(update={"push_port": settings.push_port + index})
        name = "push_server" if index == 0 else f"push_server_{index + 1}"
        services.append(python_service(own, name, "push_server", own.push_port))
    return services
