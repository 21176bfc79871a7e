"""Payment keys as a deployment has them: the order service reads only the provider's public key.

A real deployment installs the provider's public key and nothing else; the demo
pair is created by one explicit step, `rtdash keys demo`, never by a service
starting. These tests run the real order service and payment provider processes
against homes set up each way, and check the modes of what is created.
"""
from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlencode

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from producers.gateway.events import load_visitor_secret
from rtdash.keys import (KeyFileError, create_demo_keys, create_file, demo_keys, load_private_key,
                         load_public_key)
from rtdash.payments import FORM_HEADERS, NOTIFY_PATH, notify_params, signed
from rtdash.settings import PROJECT_ROOT, Settings
from stack.cli import main as rtdash
from stack.services import python_service
from stack.testing import free_port

PROVIDER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
FORGER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture
def permissive_umask():
    """umask 0: a file or directory made without an explicit mode would be readable by everyone."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No RTDASH_* variable and no .env of the environment running the tests."""
    for name in [n for n in os.environ if n.startswith("RTDASH_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


# --- creating keys and secrets -------------------------------------------------------------

def test_demo_pair_is_created_private_from_the_first_byte(tmp_path, permissive_umask):
    settings = Settings(_env_file=None, home=tmp_path / "home")
    written = demo_keys(settings)
    private, public = settings.provider_private_key_path, settings.provider_public_key_path
    assert written == [private, public]
    assert mode(private) == 0o600 and mode(private.parent) == 0o700
    assert mode(public) == 0o644
    assert load_private_key(private).public_key().public_numbers() == load_public_key(public).public_numbers()
    assert sorted(p.name for p in private.parent.iterdir()) == sorted([private.name, public.name])   # no temp files


def test_a_key_folder_others_may_enter_is_tightened(tmp_path, permissive_umask):
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir(mode=0o755)
    create_demo_keys(keys_dir / "private.pem", keys_dir / "public.pem")
    assert mode(keys_dir) == 0o700 and mode(keys_dir / "private.pem") == 0o600


def test_the_visitor_secret_is_a_secret_file_too(tmp_path, permissive_umask):
    secret = load_visitor_secret(Settings(_env_file=None, home=tmp_path))
    path = tmp_path / "keys" / "visitor_secret"
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert len(secret) == 64 and load_visitor_secret(Settings(_env_file=None, home=tmp_path)) == secret


def test_a_file_is_created_whole_once_and_never_overwritten(tmp_path):
    path = tmp_path / "secret"
    assert create_file(path, b"first", mode=0o600)
    assert not create_file(path, b"second", mode=0o600)
    assert path.read_bytes() == b"first" and [p.name for p in tmp_path.iterdir()] == ["secret"]


def test_rtdash_keys_demo_creates_once_and_never_overwrites(tmp_path, clean_env, permissive_umask):
    runner = CliRunner()
    env = {"RTDASH_HOME": str(tmp_path / "home")}
    first = runner.invoke(rtdash, ["keys", "demo"], env=env)
    assert first.exit_code == 0, first.output
    settings = Settings(_env_file=None, home=tmp_path / "home")
    private, public = settings.provider_private_key_path, settings.provider_public_key_path
    assert f"created {private}\n" in first.output
    before = {path: (path.read_bytes(), os.stat(path).st_ino) for path in (private, public)}
    again = runner.invoke(rtdash, ["keys", "demo"], env=env)
    assert again.exit_code == 0, again.output
    assert "created" not in again.output
    assert {path: (path.read_bytes(), os.stat(path).st_ino) for path in (private, public)} == before
    assert mode(private) == 0o600 and mode(private.parent) == 0o700


def test_rtdash_keys_demo_leaves_an_installed_public_key_alone(tmp_path, clean_env):
    """A public key without its private key is a real provider's: no demo pair replaces it."""
    settings = Settings(_env_file=None, home=tmp_path / "home")
    settings.keys_dir.mkdir(parents=True)
    settings.provider_public_key_path.write_bytes(public_pem(PROVIDER_KEY))
    result = CliRunner().invoke(rtdash, ["keys", "demo"], env={"RTDASH_HOME": str(settings.home)})
    assert result.exit_code == 1
    assert "without its private key" in result.output
    assert settings.provider_public_key_path.read_bytes() == public_pem(PROVIDER_KEY)
    assert not settings.provider_private_key_path.exists()


def test_halves_of_two_pairs_are_refused(tmp_path):
    create_demo_keys(tmp_path / "a" / "private.pem", tmp_path / "a" / "public.pem")
    create_demo_keys(tmp_path / "b" / "private.pem", tmp_path / "b" / "public.pem")
    with pytest.raises(KeyFileError, match="is not the public half"):
        create_demo_keys(tmp_path / "a" / "private.pem", tmp_path / "b" / "public.pem")


# --- reading keys ---------------------------------------------------------------------------

def test_a_public_key_that_is_not_one_is_refused_with_the_path(tmp_path):
    path = tmp_path / "public.pem"
    with pytest.raises(KeyFileError, match=f"no payment provider public key at {path}.*rtdash keys demo"):
        load_public_key(path)
    cases = {
        b"not a key": "is not a PEM public key",
        PROVIDER_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()): "holds a private key",
        public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)): "1024-bit",
        public_pem(ec.generate_private_key(ec.SECP256R1())): "is not an RSA key",
    }
    for data, reason in cases.items():
        path.write_bytes(data)
        with pytest.raises(KeyFileError, match=reason):
            load_public_key(path)


def test_a_private_key_others_may_read_is_refused(tmp_path):
    path = tmp_path / "private.pem"
    create_demo_keys(path, tmp_path / "public.pem")
    path.chmod(0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_private_key(path)


# --- the services ---------------------------------------------------------------------------

def service_env(home: Path, **ports: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTDASH_")}
    env.update({f"RTDASH_{name.upper()}": str(port) for name, port in ports.items()},
               RTDASH_HOME=str(home), PYTHONUNBUFFERED="1")
    return env


def refusal(module: str, env: dict[str, str]) -> str:
    """Run `python -m module`, which must exit at once with an error; the last line it printed."""
    done = subprocess.run([sys.executable, "-m", module], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr.strip().splitlines()[-1]


def test_the_order_service_does_not_start_without_the_public_key(tmp_path):
    home = tmp_path / "home"
    env = service_env(home, order_service_port=free_port(), order_service_internal_port=free_port(),
                      kafka_port=free_port())
    line = refusal("producers.order_service", env)
    path = home / "keys" / "payment_provider_public.pem"
    assert line.startswith(f"order service not started: no payment provider public key at {path}")
    assert "rtdash keys demo" in line
    assert not (home / "keys").exists()            # and it made no key
    path.parent.mkdir(parents=True)
    path.write_text("-----BEGIN PUBLIC KEY-----\nbroken\n-----END PUBLIC KEY-----\n")
    assert f"{path} is not a PEM public key" in refusal("producers.order_service", env)


def test_the_provider_does_not_start_without_its_private_key(tmp_path):
    home = tmp_path / "home"
    line = refusal("producers.provider", service_env(home, payment_provider_port=free_port()))
    path = home / "keys" / "payment_provider_private.pem"
    assert line.startswith(f"payment provider not started: no payment provider private key at {path}")
    assert "rtdash keys demo" in line
    assert not (home / "keys").exists()


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def database_rows(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table of the order database: what a refused notify must leave as it was."""
    with sqlite3.connect(path) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: sorted(db.execute(f'SELECT * FROM "{table}"').fetchall()) for table in tables}


def test_with_only_the_public_key_installed_genuine_notifies_pay_and_forged_ones_do_not(tmp_path):
    """The deployment's case: the provider's public key is installed, its private key is nowhere here."""
    home = tmp_path / "home"
    settings = Settings(_env_file=None, home=home, timezone="UTC", kafka_port=free_port(),
                        order_service_port=free_port(), order_service_internal_port=free_port())
    settings.keys_dir.mkdir(parents=True)
    settings.provider_public_key_path.write_bytes(public_pem(PROVIDER_KEY))
    notify_url = f"http://127.0.0.1:{settings.order_service_port}{NOTIFY_PATH}"

    def place(order_id: str, cents: int) -> None:
        status, _ = post(f"{settings.order_service_internal}/internal/orders",
                         json.dumps({"order_id": order_id, "amount_cents": cents}).encode(),
                         {"Content-Type": "application/json"})
        assert status == 201

    def notify(key: rsa.RSAPrivateKey, order_id: str, cents: int, **fields: str) -> tuple[int, str]:
        params = notify_params(order_id, cents, settings=settings,
                               paid_at=datetime(2026, 11, 30, 0, 0, tzinfo=timezone.utc))
        return post(notify_url, urlencode(signed(dict(params, **fields), key)).encode(), FORM_HEADERS)

    with python_service(settings, "order_service", "producers.order_service", settings.order_service_port):
        for order_id in ("K1", "K2", "A123", "A124"):
            place(order_id, 100)
        # Alipay writes gmt_payment in Beijing time: 08:00 there is midnight UTC (checked below).
        assert notify(PROVIDER_KEY, "K1", 100, gmt_payment="2026-11-30 08:00:00") == (200, "success")
        before = database_rows(home / "orders.db")
        assert notify(FORGER_KEY, "K2", 100) == (400, "fail: bad signature")
        # Signed, but a final newline is not part of an order id or an amount.
        status, reply = notify(PROVIDER_KEY, "A123\n", 100)
        assert (status, reply) == (400, "fail: out_trade_no must be 1-64 letters, digits, '_' or '-'")
        status, reply = notify(PROVIDER_KEY, "A124", 100, total_amount="1.00\n")
        assert status == 400 and "total_amount" in reply
        assert database_rows(home / "orders.db") == before

    with sqlite3.connect(home / "orders.db") as db:
        (paid_at_ms,), = db.execute("SELECT paid_at_ms FROM orders WHERE order_id = 'K1'").fetchall()
    assert datetime.fromtimestamp(paid_at_ms / 1000, timezone.utc) == datetime(2026, 11, 30, tzinfo=timezone.utc)
    # The service made no key and replaced none: the installed public key is the only key file.
    assert [p.name for p in settings.keys_dir.iterdir()] == [settings.provider_public_key_path.name]
    assert settings.provider_public_key_path.read_bytes() == public_pem(PROVIDER_KEY)
    assert not any(b"PRIVATE KEY" in p.read_bytes() for p in home.rglob("*") if p.is_file())
