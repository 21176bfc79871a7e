"""docker-compose.yml keeps or loses its state all together, and creates the topics as the local stack does.

The real-time orders query gets a task slot for each partition kafka-init gives the orders topic.

Read, not run (no Docker engine here): Kafka's log, Redis's data and every rtdash home are named
volumes, so `docker compose down` keeps all of them and `down -v` removes all of them; kafka-init's
script, run by /bin/sh with the broker's command replaced by `echo`, gives each topic the partitions
of the local stack's settings (rtdash.kafka_admin.topic_partitions).
"""
from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from rtdash.kafka_admin import pipeline_topics, topic_partitions
from rtdash.settings import PROJECT_ROOT, Settings

KAFKA_TOPICS = "/opt/kafka/bin/kafka-topics.sh"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


def volume_at(service: dict, target: str) -> str | None:
    """The source of the service's mount at `target`."""
    for volume in service.get("volumes", []):
        source, mounted, *_ = volume.split(":")
        if mounted == target:
            return source
    return None


def test_kafka_redis_and_every_home_are_named_volumes(compose):
    services, declared = compose["services"], set(compose.get("volumes") or {})
    kafka = services["kafka"]
    stateful = {"kafka": volume_at(kafka, kafka["environment"]["KAFKA_LOG_DIRS"]),
                "redis": volume_at(services["redis"], "/data")}
    stateful |= {name: volume_at(service, "/data") for name, service in services.items()
                 if (service.get("command") or [])[:2] == ["python", "-m"]}
    assert all(stateful.values()), stateful
    assert set(stateful.values()) <= declared, "a state folder is a bind mount, not one of the named volumes"
    assert len(set(stateful.values())) == len(stateful)
    assert "--appendonly" in services["redis"]["command"]
    assert kafka["environment"]["CLUSTER_ID"], "a fixed cluster id: the kept storage is formatted once"


def shell(compose_text: str, env: dict[str, str]) -> str:
    """What /bin/sh prints running `compose_text` in `env`, the broker's command replaced by `echo`.
    Compose writes a literal $ as $$; ${VAR:-default} is read by compose and by sh alike."""
    script = compose_text.replace("$$", "$").replace(KAFKA_TOPICS, "echo")
    return subprocess.run(["/bin/sh", "-c", script], env={"PATH": os.environ["PATH"], **env}, capture_output=True,
                          text=True, check=True).stdout


def created_topics(compose: dict, env: dict[str, str]) -> dict[str, int]:
    """Topic -> partitions, as kafka-init creates them in `env`."""
    out = shell(compose["services"]["kafka-init"]["command"][0], env).split()
    return {out[i + 1]: int(out[out.index("--partitions", i) + 1]) for i, word in enumerate(out) if word == "--topic"}


@pytest.mark.parametrize("mode", ["microbatch", "realtime"])
def test_kafka_init_gives_each_topic_the_partitions_of_the_local_stack(compose, monkeypatch, mode):
    for name in [n for n in os.environ if n.startswith("RTDASH_")]:
        monkeypatch.delenv(name)
    created = created_topics(compose, {"RTDASH_ORDERS_MODE": mode})
    defaults = Settings(_env_file=None, orders_mode=mode)
    assert created == {topic: topic_partitions(defaults, topic) for topic in pipeline_topics(defaults)}
    assert created[defaults.gateway_topic] == 3
    assert created[defaults.orders_realtime_topic] == 1


@pytest.mark.parametrize("partitions", [None, "3"])
def test_the_real_time_query_has_a_task_slot_for_each_partition_kafka_init_gives_the_orders_topic(compose,
                                                                                                  monkeypatch,
                                                                                                  partitions):
    """Its master is local[N], N its RTDASH_ORDERS_TOPIC_PARTITIONS: the same N as the topic's, or it refuses to
    start (a partition without a slot would never be read)."""
    for name in [n for n in os.environ if n.startswith("RTDASH_")]:
        monkeypatch.delenv(name)
    env = {} if partitions is None else {"RTDASH_ORDERS_TOPIC_PARTITIONS": partitions}
    orders_topic = Settings(_env_file=None).orders_topic
    value = compose["services"]["orders-realtime"]["environment"]["RTDASH_ORDERS_TOPIC_PARTITIONS"]
    seen = Settings(_env_file=None, orders_mode="realtime", orders_topic_partitions=shell(f"echo {value}", env).strip())
    assert seen.orders_realtime_master == f"local[{created_topics(compose, env)[orders_topic]}]"
    assert created_topics(compose, env)[orders_topic] == int(partitions or 1)
