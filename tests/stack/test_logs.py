"""Service logs are size-bounded: they rotate, keep the newest output, and a killed service's last lines."""
from __future__ import annotations

import random
import sys

import pytest

from rtdash.settings import Settings
from stack.logfiles import RotatingLog, tail
from stack.runner import Service, Stack, StackError


def written(log: RotatingLog) -> bytes:
    """Everything the log still holds, oldest first."""
    return b"".join(path.read_bytes() for path in reversed(log.files()))


def test_rotation_keeps_each_file_within_the_bound_and_the_newest_output(tmp_path):
    log = RotatingLog(tmp_path / "svc.log", max_bytes=4096, backups=2)
    rng = random.Random(7)
    data = b"".join(b"line %05d %s\n" % (i, b"x" * rng.randrange(0, 120)) for i in range(2000))
    at = 0
    while at < len(data):
        step = rng.randrange(1, 9000)
        log.write(data[at:at + step])
        at += step
    log.close()
    files = log.files()
    assert [p.name for p in files] == ["svc.log", "svc.log.1", "svc.log.2"]
    assert all(p.stat().st_size <= 4096 for p in files), [p.stat().st_size for p in files]
    assert all(p.stat().st_size > 4096 - 200 for p in files[1:])        # rotated when full, not before
    assert data.endswith(written(log))                                    # the newest, in order, nothing lost
    assert not (tmp_path / "svc.log.3").exists()


def test_a_line_longer_than_a_file_is_split_and_no_backups_means_one_file(tmp_path):
    log = RotatingLog(tmp_path / "one.log", max_bytes=1024, backups=0)
    log.write(b"y" * 5000 + b"\nend\n")
    log.write(b"z" * 100 + b"\n")
    log.close()
    assert log.files() == [tmp_path / "one.log"]
    assert (tmp_path / "one.log").read_bytes() == b"y" * (5000 % 1024) + b"\nend\n" + b"z" * 100 + b"\n"
    with pytest.raises(ValueError, match="max_bytes"):
        RotatingLog(tmp_path / "bad.log", max_bytes=0, backups=1)
    with pytest.raises(ValueError, match="backups"):
        RotatingLog(tmp_path / "bad.log", max_bytes=10, backups=-1)


def test_a_chatty_service_stays_within_the_bound_and_its_last_lines_survive_a_kill(tmp_path):
    """The stack's settings bound each service's log; a service killed while starting still shows its
    last lines, from the file, in the stack's error."""
    settings = Settings(_env_file=None, home=tmp_path, log_max_bytes=16 * 1024, log_backups=2)
    code = ("import os, signal, sys\n"
            "for i in range(4000):\n"
            "    print(f'out {i:05d} ' + 'o' * 60)\n"
            "    print(f'err {i:05d} ' + 'e' * 60, file=sys.stderr)\n"
            "sys.stdout.flush(); sys.stderr.flush()\n"
            "print('the last words before the kill', flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    chatty = Service("chatty", [sys.executable, "-c", code], settings.logs_dir / "chatty.log",
                     health=lambda: False, ready_timeout=60)
    stack = Stack(settings, [chatty])
    with pytest.raises(StackError, match=r"chatty exited with code -9(.|\n)*the last words before the kill"):
        stack.start()
    files = sorted(settings.logs_dir.iterdir())
    assert [p.name for p in files] == ["chatty.log", "chatty.log.1", "chatty.log.2"]
    sizes = [p.stat().st_size for p in files]
    assert all(size <= 16 * 1024 for size in sizes) and sum(sizes) <= 16 * 1024 * 3, sizes
    assert tail(settings.logs_dir / "chatty.log", 1) == "the last words before the kill"
    assert "err 03999 " in (settings.logs_dir / "chatty.log").read_text()    # stderr is in the same file


def test_tail_reaches_into_the_rotated_file(tmp_path):
    log = RotatingLog(tmp_path / "t.log", max_bytes=30, backups=1)
    for i in range(6):
        log.write(b"line %d of six\n" % i)
    log.close()
    assert (tmp_path / "t.log").read_text() == "line 4 of six\nline 5 of six\n"
    assert tail(tmp_path / "t.log", 3) == "line 3 of six\nline 4 of six\nline 5 of six"
    assert tail(tmp_path / "missing.log") == "(no log)"
