"""The local stack's services: Kafka creates the pipeline's topics once ready, clear errors when a part is missing."""
from __future__ import annotations

import sys

import pytest
from kafka import KafkaAdminClient

from rtdash.kafka_admin import pipeline_topics
from rtdash.settings import Settings
from stack.kafka import kafka_service
from stack.runner import StackError
from stack.services import local_stack, python_service


@pytest.mark.integration
def test_kafka_is_ready_with_the_pipeline_topics(kafka, stack_settings):
    """The session's broker was started by `Service.__enter__` alone: its on_ready hook made the topics."""
    admin = KafkaAdminClient(bootstrap_servers=stack_settings.kafka_servers, client_id="rtdash-test")
    try:
        assert set(pipeline_topics(stack_settings)) <= set(admin.list_topics())
    finally:
        admin.close()


def test_kafka_without_its_jars_refuses_to_start_and_says_how_to_get_them(tmp_path):
    settings = Settings(_env_file=None, home=tmp_path / "home", jars_dir=str(tmp_path / "no-jars"))
    service = kafka_service(settings)
    with pytest.raises(StackError, match=r"no Kafka broker jars in .*no-jars/kafka: run `make jars`"):
        service.start()
    assert service.process is None and not (tmp_path / "home" / "kafka").exists()


def test_the_local_stack_starts_each_dependency_first_and_only_kafka_has_an_on_ready_hook(tmp_path):
    services = local_stack(Settings(_env_file=None, home=tmp_path))
    assert [s.name for s in services] == ["kafka", "redis", "order_service", "payment_provider", "sms_gateway",
                                          "notifier", "shop", "gateway", "spark_jobs", "push_server"]
    assert [s.name for s in services if s.on_ready is not None] == ["kafka"]


def test_several_push_servers_on_consecutive_ports_each_with_its_own_address(tmp_path):
    services = local_stack(Settings(_env_file=None, home=tmp_path, push_port=18888, push_servers=3))
    push = [s for s in services if s.argv[-1] == "push_server"]
    assert [(s.name, s.env["RTDASH_PUSH_PORT"], s.address.rsplit(":", 1)[1]) for s in push] == [
        ("push_server", "18888", "18888"), ("push_server_2", "18889", "18889"), ("push_server_3", "18890", "18890")]
    assert services[-3:] == push and len({s.log_path for s in push}) == 3


def test_a_python_service_runs_its_module_with_the_settings_in_its_environment(tmp_path):
    settings = Settings(_env_file=None, home=tmp_path, push_port=18888)
    service = python_service(settings, "push_server", "push_server", settings.push_port)
    assert service.argv == [sys.executable, "-m", "push_server"]
    assert service.env["RTDASH_PUSH_PORT"] == "18888" and service.env["PYTHONUNBUFFERED"] == "1"
    assert service.address == f"http://{settings.bind_host}:18888"
    assert service.log_path == settings.logs_dir / "push_server.log"
