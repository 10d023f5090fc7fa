"""Running a component's asyncio loop in the foreground until the operator stops it."""

from __future__ import annotations

import asyncio
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
