"""docker-compose.yml runs the same services as `rtdash up`, wired to each other by name.

No Docker engine is needed: the file is read, not run. A service added to the local
stack without its compose counterpart (or a topic, a port or a route that drifts) fails here.
"""
from __future__ import annotations

import os
import re
import shlex

import pytest
import yaml

from rtdash.payments import NOTIFY_PATH
from rtdash.settings import PROJECT_ROOT, Settings
from rtdash.kafka_admin import pipeline_topics
from stack.services import local_stack


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


@pytest.fixture
def defaults(monkeypatch) -> Settings:
    """The shipped defaults, whatever RTDASH_* variables the environment running the tests has."""
    for name in [n for n in os.environ if n.startswith("RTDASH_")]:
        monkeypatch.delenv(name)
    return Settings(_env_file=None)


def python_modules(compose: dict) -> dict[str, str]:
    """Compose service -> the Python module it runs (`python -m <module>`)."""
    out = {}
    for name, service in compose["services"].items():
        command = service.get("command") or []
        if command[:2] == ["python", "-m"]:
            out[name] = command[2]
    return out


def command_option(service: dict, option: str) -> str:
    command = service["command"]
    return command[command.index(option) + 1]


def test_compose_runs_every_python_service_of_the_local_stack(compose, defaults):
    """The same services under the same names (`_` written `-`), each running the same module."""
    stack = {service.name.replace("_", "-"): service.argv[2] for service in local_stack(defaults)
             if service.argv[1:2] == ["-m"]}
    assert python_modules(compose) == stack


def test_kafka_init_creates_the_topics_of_the_local_stack(compose, defaults):
    script = compose["services"]["kafka-init"]["command"][0]
    loop = re.search(r"for t in ([^;]+);", script)
    assert loop, "kafka-init no longer loops over its topics"
    topics = shlex.split(loop.group(1))
    assert sorted(topics) == sorted(pipeline_topics(defaults))


def test_published_ports_are_the_default_ports(compose, defaults):
    ports = {name: service.get("ports", []) for name, service in compose["services"].items()}
    assert ports["gateway"] == [f"127.0.0.1:{defaults.gateway_port}:{defaults.gateway_port}"]
    assert ports["order-service"] == [f"127.0.0.1:{defaults.order_service_port}:{defaults.order_service_port}"]
    assert ports["push-server"] == [f"127.0.0.1:{defaults.push_port}:{defaults.push_port}"]
    assert ports["sms-gateway"] == [f"127.0.0.1:{defaults.sms_gateway_port}:{defaults.sms_gateway_port}"]


def test_services_reach_each_other_by_compose_name(compose, defaults):
    services = compose["services"]
    gateway_env = services["gateway"]["environment"]
    routes = defaults.model_copy(update={"gateway_routes": gateway_env["RTDASH_GATEWAY_ROUTES"]}).routes
    assert routes == [("order_center", "/order_center/", f"http://order-service:{defaults.order_service_port}"),
                      ("shop", "/", f"http://shop:{defaults.shop_port}")]
    assert gateway_env["RTDASH_KAFKA_BOOTSTRAP"] == "kafka:9092"   # the shared settings, merged in
    shop = services["shop"]
    assert command_option(shop, "--provider-url") == f"http://payment-provider:{defaults.payment_provider_port}"
    assert command_option(shop, "--notify-url") == f"http://gateway:{defaults.gateway_port}{NOTIFY_PATH}"
    # The order service creates the provider's key pair; the provider starts once it is healthy.
    assert services["payment-provider"]["depends_on"]["order-service"]["condition"] == "service_healthy"
    notifier = services["notifier"]
    assert command_option(notifier, "--sms-gateway-url") == f"http://sms-gateway:{defaults.sms_gateway_port}"
    assert notifier["depends_on"] == {"kafka-init": {"condition": "service_completed_successfully"},
                                      "sms-gateway": {"condition": "service_healthy"}}
    assert str(defaults.sms_gateway_port) in services["sms-gateway"]["healthcheck"]["test"][-1]


def test_the_image_holds_every_package_the_services_run(compose):
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    packages = {module.split(".")[0] for module in python_modules(compose).values()}
    assert packages | {"rtdash"} <= copied
