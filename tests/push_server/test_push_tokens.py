"""Tokens (push_server/tokens.py), `rtdash token`, and the counting of push_server/limits.py."""
from __future__ import annotations

import os
import stat
import time

import jwt
import pytest
from click.testing import CliRunner

from push_server.access import Access, redacted
from push_server.limits import CLOSE_ADDRESS_FULL, CLOSE_SERVER_FULL, ConnectionLimits, MessageRate
from push_server.tokens import (ALL_CHANNELS, AUDIENCE, SECRET_FILE, TokenError, Tokens, parse_channels, parse_ttl,
                                token_secret)
from rtdash.channels import ORDERS_PER_MINUTE, ORDERS_TODAY
from rtdash.settings import Settings
from stack.cli import main
from stack.cli_token import dashboard_url


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("30m", 1800), ("8h", 28800), ("7d", 604800),
                                           ("1h30m", 5400), (" 2H ", 7200)])
def test_lifetimes(text, seconds):
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "8 h", "8x", "-5m", "h", "1.5h", "400d"])
def test_bad_lifetimes_say_how_to_write_one(text):
    with pytest.raises(ValueError, match="lifetime"):
        parse_ttl(text)


def test_channels_of_a_comma_list():
    assert parse_channels(None) == parse_channels("") == parse_channels(" * ") == [ALL_CHANNELS]
    assert parse_channels(f"{ORDERS_TODAY}, {ORDERS_PER_MINUTE},{ORDERS_TODAY}") == [ORDERS_PER_MINUTE, ORDERS_TODAY]
    with pytest.raises(ValueError, match=r"unknown channel\(s\) orders\.yesterday; known: orders\.today"):
        parse_channels("orders.yesterday,orders.today")


def test_a_token_carries_its_channels_subject_and_times():
    tokens = Tokens(b"s" * 32, leeway=0)
    now = time.time()
    grant = tokens.verify(tokens.issue(ttl=600, channels=[ORDERS_TODAY], subject="ops"))
    assert grant.channels == {ORDERS_TODAY} and grant.subject == "ops"
    assert grant.allows(ORDERS_TODAY) and not grant.allows(ORDERS_PER_MINUTE) and not grant.all_channels
    assert now + 598 <= grant.expires_at <= now + 601
    claims = jwt.decode(tokens.issue(), options={"verify_signature": False})
    assert claims["aud"] == AUDIENCE and claims["channels"] == ["*"] and claims["exp"] - claims["iat"] == 8 * 3600
    assert tokens.verify(tokens.issue()).allows(ORDERS_PER_MINUTE)


def test_the_leeway_and_what_is_refused():
    strict, lenient = Tokens(b"s" * 32, leeway=0), Tokens(b"s" * 32, leeway=30)
    just_expired = strict.issue(ttl=10, now=time.time() - 15)
    with pytest.raises(TokenError, match="token expired"):
        strict.verify(just_expired)
    assert lenient.verify(just_expired).channels == {"*"}
    with pytest.raises(TokenError, match="token missing"):
        strict.verify("")
    with pytest.raises(TokenError, match="token invalid"):
        Tokens(b"t" * 32).verify(strict.issue())
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Tokens(b"short")


def test_the_secret_is_generated_once_only_its_owner_may_read(tmp_path):
    settings = Settings(_env_file=None, home=tmp_path / "home")
    secret = token_secret(settings)
    path = settings.keys_dir / SECRET_FILE
    assert len(secret) == 64 and path.read_bytes() == secret
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(settings.keys_dir).st_mode) == 0o700
    assert token_secret(settings) == secret                          # kept, not made again
    other = Tokens.from_settings(settings.model_copy(update={"push_token_secret": "x" * 40}))
    with pytest.raises(TokenError):
        other.verify(Tokens.from_settings(settings).issue())
    with pytest.raises(ValueError, match="RTDASH_PUSH_TOKEN_SECRET must be at least 32 bytes"):
        token_secret(settings.model_copy(update={"push_token_secret": "short"}))


def test_rtdash_token_prints_the_token_last_and_the_link_with_it_in_the_fragment(tmp_path, monkeypatch):
    for name in [n for n in os.environ if n.startswith("RTDASH_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RTDASH_HOME", str(tmp_path))
    monkeypatch.setenv("RTDASH_PUSH_PORT", "9999")
    result = CliRunner().invoke(main, ["token", "--ttl", "30m", "--channels", ORDERS_TODAY, "--subject", "ops"])
    assert result.exit_code == 0, result.output
    token = result.stdout.splitlines()[-1]
    grant = Tokens.from_settings(Settings(_env_file=None, home=tmp_path)).verify(token)
    assert grant.channels == {ORDERS_TODAY} and grant.subject == "ops"
    assert abs(grant.expires_at - (time.time() + 1800)) < 5
    assert f"dashboard: http://127.0.0.1:9999/#token={token}" in result.stderr
    assert result.stdout.strip() == token                             # stdout: the token alone
    refused = CliRunner().invoke(main, ["token", "--channels", "orders.nope"])
    assert refused.exit_code == 2 and "unknown channel(s) orders.nope" in refused.output
    refused = CliRunner().invoke(main, ["token", "--ttl", "forever"])
    assert refused.exit_code == 2 and "bad lifetime 'forever'" in refused.output


def test_the_dashboard_link_names_a_host_the_server_answers():
    assert dashboard_url(Settings(_env_file=None, push_port=8888), "T") == "http://127.0.0.1:8888/#token=T"
    assert dashboard_url(Settings(_env_file=None, bind_host="0.0.0.0", push_port=80)) == "http://127.0.0.1:80/"
    assert dashboard_url(Settings(_env_file=None, bind_host="::1", push_port=1)) == "http://[::1]:1/"


def test_connection_limits_count_per_address_and_forget_departed_ones():
    limits = ConnectionLimits(total=3, per_address=2)
    assert limits.admit("a") is None and limits.admit("a") is None
    assert limits.admit("a") == (CLOSE_ADDRESS_FULL, "too many connections from this address")
    assert limits.admit("b") is None
    assert limits.admit("c") == (CLOSE_SERVER_FULL, "server full")
    for address in ("a", "a", "b"):
        limits.release(address)
    assert limits.open == 0 and limits.addresses == 0


def test_message_rate_allows_a_burst_then_the_rate():
    now = [0.0]
    rate = MessageRate(5, clock=lambda: now[0])
    assert [rate.allow() for _ in range(6)] == [True] * 5 + [False]
    now[0] += 0.2                                                    # one message's worth later
    assert [rate.allow(), rate.allow()] == [True, False]


def test_hosts_are_matched_by_name_and_port():
    access = Access(hosts=["127.0.0.1:8888", "[::1]:8888", "Dash.Example"], origins=[], tokens=Tokens(b"s" * 32))
    for host in ("127.0.0.1:8888", "[::1]:8888", "dash.example", "dash.example:443", "DASH.EXAMPLE:8080"):
        assert access.host_allowed(host), host
    for host in ("127.0.0.1", "127.0.0.1:8889", "localhost:8888", "evil.example:8888", "", "127.0.0.1:8888@evil",
                 "127.0.0.1:notaport", "127.0.0.1:99999", "dash.example.evil.example", "dash.example/x"):
        assert not access.host_allowed(host), host
    with pytest.raises(ValueError, match="bad RTDASH_ALLOWED_HOSTS entry"):
        Access(hosts=["http://dash.example"], origins=[], tokens=Tokens(b"s" * 32))


def test_the_default_hosts_are_the_servers_own_address():
    assert Settings(_env_file=None, push_port=8888).hosts == ["127.0.0.1:8888", "localhost:8888", "[::1]:8888"]
    assert Settings(_env_file=None, push_port=1, bind_host="10.0.0.5").hosts[-1] == "10.0.0.5:1"
    assert Settings(_env_file=None, push_port=1, bind_host="0.0.0.0").hosts == ["127.0.0.1:1", "localhost:1", "[::1]:1"]
    assert Settings(_env_file=None, allowed_hosts="a.example, b.example:80").hosts == ["a.example", "b.example:80"]


def test_a_token_in_a_logged_uri_is_redacted():
    assert redacted("/ws?token=abc.def.ghi&since=x") == "/ws?token=[redacted]&since=x"
    assert redacted("/ws?since=x&TOKEN=abc") == "/ws?since=x&TOKEN=[redacted]"
    assert redacted("/ws?notoken=1") == "/ws?notoken=1"
