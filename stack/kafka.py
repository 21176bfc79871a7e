"""The local stack's Apache Kafka: a single-node KRaft broker+controller from the jars in .jars/kafka.

Its storage is formatted on first start; once it answers metadata requests it
creates the topics rtdash uses (`rtdash.kafka_admin`). docker-compose.yml runs the
same broker from the apache/kafka image instead.
"""
from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from rtdash.kafka_admin import ensure_topics, kafka_ready
from rtdash.settings import Settings

from .runner import Service, StackError

log = logging.getLogger("rtdash.stack")


def kafka_service(settings: Settings) -> Service:
    """The broker of `settings` (ports, heap, home); ready once the topics exist."""
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

    def create_topics() -> None:
        created = ensure_topics(settings)
        if created:
            log.info("created topics %s", ", ".join(created))

    # C1 only (-XX:TieredStopAtLevel=1): the C2 compiler's bursts starve the services beside the
    # broker on a small machine, and C1's code is enough at the local stack's rates (BENCHMARKS.md).
    argv = [java(), f"-Xmx{settings.kafka_heap}", f"-Xms{settings.kafka_heap}", "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={root / 'log4j2.properties'}", "-cp", f"{jars}/*", "kafka.Kafka", str(config)]
    return Service("kafka", argv, settings.logs_dir / "kafka.log", prepare=prepare,
                   health=lambda: kafka_ready(settings.kafka_servers), on_ready=create_topics,
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
        # Every topic is created with its own count (rtdash.kafka_admin.topic_partitions); this is the rest's.
        f"num.partitions={settings.side_topic_partitions}",
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
    """The JDK's java: $JAVA_HOME/bin/java, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise StackError("java not found: install a JDK 17 or newer (apt-get install openjdk-17-jre-headless)")
    return found
