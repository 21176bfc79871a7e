"""`python -m push_server` as a process: serves, logs, and stops cleanly on SIGTERM."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import redis
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from dashboard_tokens import ws_url
from rtdash.channels import snapshot_key
from rtdash.settings import Settings
from stack.testing import free_port
from waiting import eventually

ROOT = Path(__file__).resolve().parents[2]


def health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return json.loads(response.read())
    except OSError:
        return None


@pytest.mark.timeout(60)
def test_serves_from_redis_and_stops_on_sigterm(push_redis, tmp_path):
    port = free_port()
    envelope = json.dumps({"channel": "orders.today", "seq": 3,
                           "data": {"date": "2026-11-26", "count": 2, "amount_cents": 4550}})
    store = redis.Redis.from_url(push_redis.url)
    store.set(snapshot_key("maintest", "orders.today"), envelope)
    store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTDASH_")}
    env.update(RTDASH_PUSH_PORT=str(port), RTDASH_REDIS_URL=push_redis.url, RTDASH_REDIS_PREFIX="maintest",
               RTDASH_HOME=str(tmp_path), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    log = tmp_path / "push.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "push_server"], cwd=tmp_path, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        def connected_to_redis() -> dict | bool:
            if proc.poll() is not None:
                raise RuntimeError(f"the push server exited:\n{log.read_text()}")
            state = health(port)
            return state if state is not None and state["redis_connected"] else False

        state = eventually(connected_to_redis, timeout=20, interval=0.1, what="the push server connected to Redis")
        assert state["status"] == "ok" and state["clients"] == 0

        async def client_sees_shutdown():
            # The process made its token secret under its home; a token from the same home opens /ws.
            url = ws_url(Settings(_env_file=None, home=tmp_path), port=port)
            ws = await websocket_connect(HTTPRequest(url, headers={"Origin": f"http://localhost:{port}"}))
            assert json.loads(await ws.read_message()) == json.loads(envelope)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(ws.read_message(), 10) is None
            return ws.close_code

        assert asyncio.run(client_sees_shutdown()) == 1001
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    for line in ("push server on", "redis connected", "connected (1 clients)", "disconnected",
                 "push server stopping", "push server stopped"):
        assert line in text, text
    assert "Traceback" not in text, text
    assert health(port) is None                          # nothing listens any more
