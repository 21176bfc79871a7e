"""The local stack runner behind `rtdash up`, `rtdash down` and `rtdash status`.

Every part is a real process started here: a single-node Apache Kafka broker
in KRaft mode, redis-server, the order service, the Spark orders job (local
mode) and the push server. Each runs in its own process group with its output
in ``<home>/logs/<name>.log``; the runner waits until each answers its health
check before starting the next, creates the topics, and on stop sends SIGTERM
to each group in reverse order (SIGKILL after a grace period), so no process
or port is left behind. The test suite starts Kafka and Redis through the same
`Service` definitions, on free ports.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .kafka_admin import ensure_topics, kafka_ready, pipeline_topics as stack_topics  # noqa: F401
from .settings import Settings

log = logging.getLogger("rtdash.stack")


class StackError(RuntimeError):
    """A service could not start; the message says which, why, and where it logged."""


@dataclass
class Service:
    name: str
    argv: list[str]
    log_path: Path
    health: Callable[[], bool]
    address: str = ""
    env: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[], None] | None = None
    ready_timeout: float = 60.0
    stop_timeout: float = 20.0
    process: subprocess.Popen | None = None

    def start(self) -> None:
        if self.prepare:
            self.prepare()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env}, start_new_session=True)

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise StackError(f"{self.name} exited with code {self.process.returncode} while starting; "
                                 f"see {self.log_path}:\n{tail(self.log_path)}")
            if self.health():
                return
            time.sleep(0.2)
        raise StackError(f"{self.name} not healthy after {self.ready_timeout:.0f}s; see {self.log_path}:\n"
                         f"{tail(self.log_path)}")

    def __enter__(self) -> "Service":
        """Start and wait until healthy; stopped on leaving (also when it never got healthy)."""
        self.start()
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is None:
            return
        stop_process_group(self.process.pid, self.stop_timeout, wait=self.process.wait)
        self.process = None


def stop_process_group(pid: int, timeout: float, wait: Callable[[float], object] | None = None) -> None:
    """SIGTERM the group led by `pid`, SIGKILL it after `timeout` seconds."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if wait is not None:
            try:
                wait(0.2)
            except subprocess.TimeoutExpired:
                continue
        if not _group_alive(pid):
            return
        time.sleep(0.1)
    log.warning("process group %d did not stop in %.0fs, killing it", pid, timeout)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if wait is not None:
        try:
            wait(5)
        except subprocess.TimeoutExpired:
            pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader still counts until reaped; check /proc for live members.
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- Kafka -----------------------------------------------------------------------------

def kafka_service(settings: Settings) -> Service:
    """A single-node KRaft broker+controller; storage formatted on first start."""
    root = (settings.home / "kafka").resolve()
    jars = settings.jars / "kafka"
    config = root / "server.properties"

    def prepare() -> None:
        if not any(jars.glob("kafka_2.13-*.jar")):
            raise StackError(f"no Kafka broker jars in {jars}: run `make jars` (or `make demo`) first")
        root.mkdir(parents=True, exist_ok=True)
        config.write_text(_kafka_properties(settings, root / "data"))
        (root / "log4j2.properties").write_text(_LOG4J2)
        if not (root / "data" / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            # "--cluster-id=" keeps an id that starts with "-" from reading as an option.
            formatted = subprocess.run([java(), "-cp", f"{jars}/*", "kafka.tools.StorageTool", "format",
                                        f"--cluster-id={cluster_id}", "-c", str(config)],
                                       capture_output=True, text=True)
            if formatted.returncode != 0:
                raise StackError(f"formatting Kafka storage in {root / 'data'} failed:\n"
                                 f"{formatted.stdout}{formatted.stderr}")

    # C1 only (no C2 JIT): on a machine this size, the broker's C2 compiler thread took a whole
    # core for a few hundred milliseconds at a time, again and again for minutes after the start,
    # and every service beside it waited. At the local stack's rates the C1 code is enough:
    # measured at 1,500 notifies/s, the broker used 0.06-0.08 cores instead of 0.14 and the
    # order service's p99 went from 24-28 to 12-17 ms (BENCHMARKS.md).
    argv = [java(), f"-Xmx{settings.kafka_heap}", f"-Xms{settings.kafka_heap}", "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={root / 'log4j2.properties'}", "-cp", f"{jars}/*", "kafka.Kafka", str(config)]
    return Service("kafka", argv, settings.logs_dir / "kafka.log", prepare=prepare,
                   health=lambda: kafka_ready(settings.kafka_servers),
                   address=f"kafka://{settings.kafka_servers}", ready_timeout=90)


def _kafka_properties(settings: Settings, data: Path) -> str:
    host, port, cport = settings.bind_host, settings.kafka_port, settings.kafka_controller_port
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{host}:{cport}",
        f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
        f"advertised.listeners=PLAINTEXT://{host}:{port}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "inter.broker.listener.name=PLAINTEXT",
        f"log.dirs={data}",
        f"num.partitions={settings.orders_topic_partitions}",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=4",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        # A single local node on a small machine: a few threads, not the defaults sized for a server.
        "num.network.threads=2",
        "num.io.threads=2",
        "background.threads=2",
        "auto.create.topics.enable=false",
        "log.retention.hours=168",
        "",
    ])


_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = %d{ISO8601} %p %c{1}: %m%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
logger.broker.name = kafka.server.BrokerServer
logger.broker.level = INFO
"""


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise StackError("java not found: install a JDK 17 or newer (apt-get install openjdk-17-jre-headless)")
    return found


# --- Redis -----------------------------------------------------------------------------

def redis_service(settings: Settings, *, persist: bool = True) -> Service:
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


def redis_ready(url: str) -> bool:
    import redis
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


# --- rtdash's own processes --------------------------------------------------------------

def python_service(settings: Settings, name: str, module: str, port: int, ready_timeout: float = 30,
                   health_path: str = "/healthz", args: list[str] | None = None) -> Service:
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
        python_service(settings, "push_server", "push_server", settings.push_port),
    ]


class Stack:
    """Starts services in order, waits for health, stops them in reverse order."""

    def __init__(self, settings: Settings, services: list[Service]):
        self.settings = settings
        self.services = services
        self.state_file = settings.home / "run" / "stack.json"

    def start(self, on_step: Callable[[str], None] = lambda _msg: None) -> None:
        self._refuse_if_running()
        busy = [s for s in self.services if s.address and _address_busy(s.address)]
        if busy:
            raise StackError("ports already in use: " + ", ".join(f"{s.name} ({s.address})" for s in busy)
                             + "; stop the other stack (`rtdash down`) or set RTDASH_*_PORT")
        try:
            for service in self.services:
                on_step(f"starting {service.name}")
                service.start()
                self._write_state()
                service.wait_healthy()
                log.info("%s healthy at %s (log %s)", service.name, service.address, service.log_path)
                if service.name == "kafka":
                    created = ensure_topics(self.settings)
                    if created:
                        log.info("created topics %s", ", ".join(created))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for service in reversed(self.services):
            if service.process is not None:
                log.info("stopping %s", service.name)
                service.stop()
        self.state_file.unlink(missing_ok=True)

    def _write_state(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({
            "runner_pid": os.getpid(),
            "services": {s.name: {"pid": s.process.pid, "address": s.address, "log": str(s.log_path)}
                         for s in self.services if s.process is not None},
        }, indent=2))

    def _refuse_if_running(self) -> None:
        state = read_state(self.settings)
        if state and _pid_alive(state.get("runner_pid", -1)):
            raise StackError(f"a stack is already running (runner pid {state['runner_pid']}); "
                             "`rtdash down` stops it")


def _address_busy(address: str) -> bool:
    hostport = address.split("://", 1)[-1].split("/", 1)[0].split(",")[0]
    host, port = hostport.rsplit(":", 1)
    return port_open(host, int(port))


def proc_stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name: state at 0, ppid at 1, utime and
    stime (clock ticks) at 11 and 12. The name is cut off at its last ')': it may hold spaces."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _pid_alive(pid: int) -> bool:
    """True while `pid` runs; an exited process not yet reaped (a zombie) counts as gone."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    except PermissionError:
        return True
    try:
        return proc_stat(pid)[0] != "Z"
    except OSError:
        return False


def read_state(settings: Settings) -> dict | None:
    path = settings.home / "run" / "stack.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def stop_running_stack(settings: Settings, timeout: float = 60) -> list[str]:
    """`rtdash down`: ask the runner to stop, then make sure every service is gone."""
    state = read_state(settings)
    if not state:
        return []
    runner = state.get("runner_pid")
    if runner and runner != os.getpid() and _pid_alive(runner):
        os.kill(runner, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(runner) and time.monotonic() < deadline:
            time.sleep(0.2)
    stopped = []
    for name, info in reversed(list(state.get("services", {}).items())):
        if _group_alive(info["pid"]):
            stop_process_group(info["pid"], 20)
        stopped.append(name)
    (settings.home / "run" / "stack.json").unlink(missing_ok=True)
    return stopped
