"""Running a component's process: its asyncio loop in the foreground until the operator stops
it, and the garbage collector's policy for a long-running stream process."""

from __future__ import annotations

import asyncio
import gc
import signal
from typing import Awaitable, Callable


def run_until_signalled(stop: asyncio.Event, run: Callable[[], Awaitable[None]]) -> None:
    """``asyncio.run(run())`` with SIGINT / SIGTERM setting ``stop``: the component finishes
    what it is writing and returns, instead of being torn down mid-batch."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run()

    asyncio.run(main())


def tune_garbage_collector(gen0_threshold: int) -> None:
    """Set the cycle collector up for a process that handles records in batches.

    CPython collects its youngest generation after 700 net allocations of tracked objects. A
    batch's short-lived objects (records, per-batch lists and dicts) outlive that many, so they
    are promoted, and every promotion brings a full collection nearer: one that rescans every
    long-lived object. After ``gen0_threshold`` net allocations instead, most of a batch is
    freed by reference counting before a collection sees it. What start-up built (modules,
    the app) is frozen out of every later collection."""
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
