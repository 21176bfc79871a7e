"""docker-compose.yml runs the same services as `rtdash up`, wired to each other by name.

No Docker engine is needed: the file is read, not run. A service added to the local
stack without its compose counterpart (or a topic, a port or a route that drifts) fails here.
"""
from __future__ import annotations

import os
import posixpath
import re
import shlex
import subprocess
from urllib.parse import urlsplit

import pytest
import yaml

from rtdash.payments import NOTIFY_PATH
from rtdash.settings import PROJECT_ROOT, Settings
from rtdash.kafka_admin import pipeline_topics
from stack.services import local_stack, realtime_orders

MODES = ["microbatch", "realtime"]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


@pytest.fixture
def defaults(monkeypatch) -> Settings:
    """The shipped defaults, whatever RTDASH_* variables the environment running the tests has."""
    for name in [n for n in os.environ if n.startswith("RTDASH_")]:
        monkeypatch.delenv(name)
    return Settings(_env_file=None)


def in_mode(defaults: Settings, mode: str) -> Settings:
    """The shipped defaults in orders mode `mode`."""
    return defaults.model_copy(update={"orders_mode": mode})


def active(compose: dict, profiles: set[str]) -> dict[str, dict]:
    """The services `docker compose --profile <each of profiles> up` runs: those of no profile and those of these."""
    return {name: service for name, service in compose["services"].items()
            if not service.get("profiles") or profiles & set(service["profiles"])}


def profiles_of(mode: str) -> set[str]:
    """The profiles the README's command line of orders mode `mode` names."""
    return {"realtime"} if mode == "realtime" else set()


def interpolate(value: str, env: dict[str, str]) -> str:
    """`value` as compose reads it in environment `env`: ${VAR}, ${VAR:-default} (unset or empty) and $$."""
    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(3)
        return env.get(name) or (default if default is not None else "")

    out = re.sub(r"\$\$|\$\{(\w+)(:-([^}]*))?\}", one, value)
    assert "${" not in out, f"a form of interpolation this reading does not know: {value!r}"
    return out


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


@pytest.mark.parametrize("mode", MODES)
def test_compose_runs_every_python_service_of_the_local_stack(compose, defaults, mode):
    """The same services under the same names (`_` written `-`), each running the same module, in each
    orders mode: `docker compose up` in microbatch, `docker compose --profile realtime up` in realtime."""
    stack = {service.name.replace("_", "-"): service.argv[2] for service in local_stack(in_mode(defaults, mode))
             if service.argv[1:2] == ["-m"]}
    assert python_modules({"services": active(compose, profiles_of(mode))}) == stack


def test_the_realtime_profile_holds_the_real_time_orders_services_with_their_ports(compose, defaults):
    """Each service of `realtime_orders` in the realtime mode, and only those, under the `realtime` profile:
    the same module, its health checked at its port, fed by Kafka's topics (and Redis for the applier)."""
    realtime = realtime_orders(in_mode(defaults, "realtime"))
    assert [service.name for service in realtime] == ["orders_realtime", "orders_applier"]
    assert realtime_orders(in_mode(defaults, "microbatch")) == []
    services = compose["services"]
    assert {name for name, service in services.items() if service.get("profiles")} == \
        {service.name.replace("_", "-") for service in realtime}
    for service in realtime:
        name = service.name.replace("_", "-")
        ours = services[name]
        assert ours["profiles"] == ["realtime"], name
        assert ours["command"] == ["python", *service.argv[1:]], name
        health = urlsplit(ours["healthcheck"]["test"][-1])
        assert (health.hostname, health.port, health.path) == ("127.0.0.1", urlsplit(service.address).port,
                                                               "/healthz"), name
        assert ours["depends_on"]["kafka-init"] == {"condition": "service_completed_successfully"}, name
        assert ours["environment"]["RTDASH_KAFKA_BOOTSTRAP"] == "kafka:9092", name
    assert services["orders-applier"]["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert services["orders-applier"]["environment"]["RTDASH_REDIS_URL"] == "redis://redis:6379/0"
    ports = {urlsplit(service.address).port for service in realtime}
    assert ports == {defaults.orders_realtime_health_port, defaults.orders_applier_port} == {8014, 8013}


@pytest.mark.parametrize("mode", MODES)
def test_kafka_init_creates_the_topics_of_the_local_stack(compose, defaults, mode):
    script = compose["services"]["kafka-init"]["command"][0]
    loop = re.search(r"for t in ([^;]+);", script)
    assert loop, "kafka-init no longer loops over its topics"
    topics = shlex.split(loop.group(1))
    assert sorted(topics) == sorted(pipeline_topics(in_mode(defaults, mode)))
    assert in_mode(defaults, mode).orders_realtime_topic in topics


@pytest.mark.parametrize("mode", MODES)
def test_every_service_runs_in_the_orders_mode_of_the_environment_and_one_writes_the_orders(compose, defaults,
                                                                                           mode):
    """RTDASH_ORDERS_MODE from the environment compose runs in (default microbatch) reaches spark-jobs and
    the realtime profile's services alike, so orders.today and orders.per_minute have one writer."""
    from jobs.__main__ import specs

    services = compose["services"]
    readers = ["spark-jobs", "orders-realtime", "orders-applier"]
    raw = {name: service["environment"].get("RTDASH_ORDERS_MODE") for name, service in services.items()
           if name in python_modules(compose)}
    assert all(raw[name] for name in readers), raw
    assert len(set(raw.values())) == 1, raw      # every rtdash service: one value
    env = {} if mode == "microbatch" else {"RTDASH_ORDERS_MODE": mode}   # microbatch: the variable unset
    for name in readers:
        environment = {k: interpolate(str(v), env) for k, v in services[name]["environment"].items()}
        assert Settings(_env_file=None, **{k.removeprefix("RTDASH_").lower(): v for k, v in environment.items()
                                           if k.startswith("RTDASH_")}).orders_mode == mode, name
    running = set(active(compose, profiles_of(mode)))
    writers = running & {"orders-applier"}
    if "orders" in [spec.name for spec in specs(in_mode(defaults, mode))]:   # spark-jobs' orders query
        writers |= running & {"spark-jobs"}
    assert writers == ({"spark-jobs"} if mode == "microbatch" else {"orders-applier"})


@pytest.mark.parametrize("name", ["orders-realtime", "orders-applier"])
def test_the_realtime_profile_refuses_to_start_in_the_microbatch_mode(compose, name):
    """`--profile realtime` without RTDASH_ORDERS_MODE=realtime would run a second writer beside spark-jobs'
    orders query: the service's entrypoint ends it, saying why; in the realtime mode it runs its command."""
    service = compose["services"][name]
    entrypoint = [interpolate(part, {}) for part in service["entrypoint"]]   # compose's $$ is sh's $
    stand_in = ["echo", *service["command"][1:]]                             # the command, without running it
    for mode in ("microbatch", "realtime", ""):
        env = {"PATH": os.environ["PATH"], "RTDASH_ORDERS_MODE": mode}
        run = subprocess.run([*entrypoint, *stand_in], env=env, capture_output=True, text=True, timeout=10)
        if mode == "realtime":
            assert (run.returncode, run.stdout, run.stderr) == (0, " ".join(service["command"][1:]) + "\n", "")
        else:
            assert run.returncode == 1 and run.stdout == "", (mode, run)
            assert "realtime orders mode only" in run.stderr and "--profile realtime" in run.stderr, run.stderr


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
    # Checkout places each order in the order service's internal API, inside the compose network only.
    internal = defaults.order_service_internal_port
    assert services["order-service"]["environment"]["RTDASH_ORDER_SERVICE_INTERNAL_HOST"] == "0.0.0.0"
    assert not any(str(internal) in port for port in services["order-service"]["ports"])
    for name in ("shop", "payment-provider"):
        assert services[name]["environment"]["RTDASH_ORDER_SERVICE_INTERNAL_URL"] == \
            f"http://order-service:{internal}"
    notifier = services["notifier"]
    assert command_option(notifier, "--sms-gateway-url") == f"http://sms-gateway:{defaults.sms_gateway_port}"
    assert notifier["depends_on"] == {"kafka-init": {"condition": "service_completed_successfully"},
                                      "sms-gateway": {"condition": "service_healthy"}}
    assert str(defaults.sms_gateway_port) in services["sms-gateway"]["healthcheck"]["test"][-1]


def mounts(service: dict) -> list[tuple[str, str, bool]]:
    """(host path, container path, read-only) of each of a service's bind mounts."""
    out = []
    for volume in service.get("volumes", []):
        host, container, *mode = volume.split(":")
        out.append((posixpath.normpath(host), posixpath.normpath(container), mode == ["ro"]))
    return out


def host_path(service: dict, path: str) -> str | None:
    """The host file a service sees at `path`, through its mounts; None when no mount holds it."""
    for host, container, _ in mounts(service):
        if path == container or path.startswith(container + "/"):
            return posixpath.normpath(host + path[len(container):])
    return None


def reaches(service: dict, host_file: str) -> bool:
    """True when one of the service's mounts shows `host_file` (or a folder holding it) inside it."""
    return any(host_file == host or host_file.startswith(host + "/") for host, _, _ in mounts(service))


def test_only_the_signer_gets_the_private_key_and_the_verifier_only_the_public_key(compose):
    services = compose["services"]
    keys = services["keys"]
    assert keys["command"] == ["rtdash", "keys", "demo"] and keys["restart"] == "no"
    private = host_path(keys, keys["environment"]["RTDASH_PROVIDER_PRIVATE_KEY"])
    public = host_path(keys, keys["environment"]["RTDASH_PROVIDER_PUBLIC_KEY"])
    assert private and public and posixpath.dirname(private) != posixpath.dirname(public)

    order_service, provider = services["order-service"], services["payment-provider"]
    assert host_path(order_service, order_service["environment"]["RTDASH_PROVIDER_PUBLIC_KEY"]) == public
    assert host_path(provider, provider["environment"]["RTDASH_PROVIDER_PRIVATE_KEY"]) == private
    for service in (order_service, provider):   # the key folders read-only
        assert all(read_only for host, _, read_only in mounts(service) if host.startswith("compose-keys"))
        assert service["depends_on"]["keys"] == {"condition": "service_completed_successfully"}
    assert not reaches(order_service, private)
    assert not reaches(provider, public)
    for name, service in services.items():
        if name not in ("keys", "order-service", "payment-provider"):
            assert not any(host.startswith("compose-keys") for host, _, _ in mounts(service)), name
            assert not reaches(service, private) and not reaches(service, public), name
            assert not any(var.startswith("RTDASH_PROVIDER_") for var in service.get("environment") or {}), name


def test_each_rtdash_service_has_a_home_of_its_own(compose):
    """No service sees another's state or secrets (the gateway's visitor secret, the shop's cookie secret)."""
    homes = {name: host_path(service, "/data") for name, service in compose["services"].items()
             if name in python_modules(compose)}
    assert all(homes.values()), homes
    assert len(set(homes.values())) == len(homes)
    assert not any(a != b and (a.startswith(b + "/") or b.startswith(a + "/"))
                   for a in homes.values() for b in homes.values())


def test_the_image_holds_every_package_the_services_run(compose):
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    packages = {module.split(".")[0] for module in python_modules(compose).values()}
    assert packages | {"rtdash"} <= copied
