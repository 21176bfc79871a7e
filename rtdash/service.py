"""What every rtdash service process shares at its edge: waiting for the signal to stop."""
from __future__ import annotations

import asyncio
import signal


async def until_stopped(stop: asyncio.Event | None = None) -> None:
    """Return on SIGTERM or SIGINT (or when `stop` is set), with the handlers removed again.

    Services call this after they started listening and shut down cleanly after
    it returns: stop accepting, finish in-flight work, close background tasks.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
