"""Size-bounded service logs: each service's output, read through a pipe, into a file that rotates.

The runner starts every service with its stdout and stderr on one pipe, and a
thread (`copy_output`) appends what comes through it to the service's
`RotatingLog`, <home>/logs/<name>.log. Before a piece would make the file larger
than `max_bytes`, the file becomes <name>.log.1 (.1 becomes .2 and so on; the
oldest beyond `backups` goes) and a new one begins, at the end of a line when the
piece has one there. So a service's logs never take more than
max_bytes × (backups + 1) on disk, whatever it writes, and whatever a killed
service wrote before it died is still in the pipe and lands in the file. One
mechanism for every service: Python's logging, the JVMs' log4j (Kafka, Spark)
and redis-server all just write to their stderr or stdout.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import IO

log = logging.getLogger("rtdash.stack")

READ_BYTES = 64 * 1024


class RotatingLog:
    """Appends bytes to `path`, rotating as the module docstring says; safe to write from several threads.

    The file is opened on the first write (appending to what is there) and after `close`
    on the next one, so a restarted service goes on in the same files.
    """

    def __init__(self, path: Path, max_bytes: int, backups: int):
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, not {max_bytes}")
        if backups < 0:
            raise ValueError(f"backups must be 0 or more, not {backups}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._size = 0

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._open()
            while data:
                room = self.max_bytes - self._size
                if len(data) <= room:
                    self._append(data)
                    return
                cut = data.rfind(b"\n", 0, room) + 1
                if not cut:
                    if self._size:
                        self._rotate()       # the line starts a new file
                        continue
                    cut = room               # one line longer than a whole file: split it
                self._append(data[:cut])
                data = data[cut:]
                self._rotate()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def files(self) -> list[Path]:
        """The current file and the rotated ones that exist, newest first."""
        names = [self.path, *(self.backup(n) for n in range(1, self.backups + 1))]
        return [p for p in names if p.exists()]

    def backup(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def _open(self) -> None:
        self._file = open(self.path, "ab", buffering=0)
        self._size = os.fstat(self._file.fileno()).st_size

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._file.write(view):]
        self._size += len(data)

    def _rotate(self) -> None:
        self._file.close()
        if self.backups:
            for n in range(self.backups - 1, 0, -1):
                if self.backup(n).exists():
                    os.replace(self.backup(n), self.backup(n + 1))
            os.replace(self.path, self.backup(1))
        else:
            self.path.unlink(missing_ok=True)
        self._open()


def copy_output(source: IO[bytes], target: RotatingLog, name: str) -> threading.Thread:
    """Start a thread that copies `source` (a pipe) into `target` until its end, then closes `source`.

    The pipe ends when every process holding it has exited, so the last lines of a killed
    service are copied too. If the log cannot be written (disk full), the output is still
    read and dropped, so that the service never blocks on a full pipe.
    """

    def run() -> None:
        fd = source.fileno()
        failed = False
        try:
            while chunk := os.read(fd, READ_BYTES):
                try:
                    target.write(chunk)
                    failed = False
                except OSError as exc:
                    if not failed:
                        log.warning("cannot write the log of %s to %s (dropping its output until it "
                                    "can): %s", name, target.path, exc)
                    failed = True
        finally:
            source.close()

    thread = threading.Thread(target=run, name=f"log-{name}", daemon=True)
    thread.start()
    return thread


def tail(path: Path, lines: int = 15) -> str:
    """The last `lines` lines of a service's log, from the rotated file before it too when needed."""
    texts: list[str] = []
    for candidate in (path, path.with_name(f"{path.name}.1")):
        try:
            texts.insert(0, candidate.read_text(errors="replace"))
        except OSError:
            continue
        if sum(text.count("\n") for text in texts) >= lines:
            break
    if not texts:
        return "(no log)"
    return "\n".join("".join(texts).splitlines()[-lines:])
