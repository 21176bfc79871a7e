"""Fixtures of the job tests: a private redis-server and the job's settings.

The SparkSession (`spark`) comes from the suite's root conftest: one per run.
"""
from __future__ import annotations

import shutil
import subprocess

import pytest
import redis

from rtdash.settings import Settings
from stack.testing import free_port
from waiting import eventually


@pytest.fixture(scope="session")
def jobs_redis(tmp_path_factory) -> str:
    """A throwaway redis-server on a free port (no persistence); yields its URL, stops it after the run."""
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    workdir = tmp_path_factory.mktemp("jobs-redis")
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)

        def answers() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {proc.returncode}")
            try:
                return client.ping()
            except redis.ConnectionError:
                return False

        eventually(answers, timeout=10, what=f"redis-server on port {port}")
        client.close()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def redis_client(jobs_redis):
    """A client of `jobs_redis`; the database is emptied after each test."""
    client = redis.Redis.from_url(jobs_redis)
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def job_settings(jobs_redis, tmp_path) -> Settings:
    """Settings of one job run: UTC, its own home (checkpoints) and the private Redis."""
    return Settings(_env_file=None, home=tmp_path, redis_url=jobs_redis, timezone="UTC",
                    spark_trigger_seconds=0, spark_shuffle_partitions=2, redis_prefix="jobtest")
