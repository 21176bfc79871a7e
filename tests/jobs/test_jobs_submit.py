"""A job file alone under spark-submit, as on a cluster: it counts, reports its health and stops on SIGTERM."""
from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest
import redis

from rtdash.channels import TRAFFIC_TODAY, snapshot_key
from rtdash.contracts import GatewayRequest, to_json
from rtdash.settings import PROJECT_ROOT
from rtdash.kafka_admin import ensure_topics
from rtdash.kafka_producer import make_producer
from stack.runner import Service
from stack.testing import free_port
from waiting import eventually

pytestmark = pytest.mark.integration


def healthz(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return json.loads(err.read())
    except OSError:
        return None


def test_traffic_job_runs_alone_under_spark_submit(stack_settings, kafka, redis_server, tmp_path):
    settings = stack_settings.model_copy(update={
        "gateway_topic": "gateway.submit", "gateway_dlq_topic": "gateway.submit.dlq", "redis_prefix": "submit",
        "home": tmp_path, "jobs_health_port": free_port()})
    ensure_topics(settings, [settings.gateway_topic, settings.gateway_dlq_topic])
    now = datetime(2026, 3, 1, 10, 0, 5, tzinfo=timezone.utc)   # event time: the traffic job's day is the events'
    producer = make_producer(settings.kafka_servers, client_id="rtdash-test-jobs-submit")
    for i in range(30):
        producer.produce(settings.gateway_topic, to_json(GatewayRequest(
            request_id=f"s{i}", started_at=now, method="GET", path="/", route="shop", query={}, status=200,
            request_bytes=0, response_bytes=1, total_ms=3.0, gateway_ms=0.1, visitor_id=f"v{i % 7}",
            source="proxy")))
    assert producer.flush(30) == 0, "Kafka did not acknowledge every event"

    jars = ",".join(str(p) for p in sorted((settings.jars / "spark").glob("*.jar")))
    submit = Path(sys.executable).parent / "spark-submit"
    job = Service("traffic_submit", [str(submit), "--master", "local[1]", "--jars", jars,
                                     str(PROJECT_ROOT / "jobs" / "traffic.py")],
                  tmp_path / "traffic_submit.log", health=lambda: (healthz(settings.jobs_health_port) or {}).get(
                      "active", False),
                  env=settings.child_env() | {"PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1",
                                              "PYTHONPATH": str(PROJECT_ROOT)}, ready_timeout=180)
    client = redis.Redis.from_url(settings.redis)
    with job:
        def traffic_today() -> dict | bool:
            snapshot = client.get(snapshot_key(settings.redis_prefix, TRAFFIC_TODAY))
            return snapshot is not None and json.loads(snapshot)["data"]

        today = eventually(lambda: (data := traffic_today()) and data["page_views"] == 30 and data, timeout=120,
                           what="traffic.today with 30 page views")
        health = healthz(settings.jobs_health_port)
        assert health["queries"]["traffic"]["query"] == "traffic[gateway.submit->submit]"
        assert (today["date"], today["visitors"]) == ("2026-03-01", 7)
        process = job.process
        job.stop()
        # SIGTERM reaches the whole group: the Python driver stops its query, spark-submit's JVM
        # exits with 128 + 15; neither needed the SIGKILL that follows a stop timeout.
        assert process.returncode in (0, 143), process.returncode
    client.close()
