"""A Faust agent that only counts: the framework's own ceiling for `stream.take_events`.

    python -m bench.perf.faust_noop_agent BOOTSTRAP TOPIC_PREFIX TOTAL

Prints `RATE <events/s>` (from the first batch to the last) and exits. ``NOOP_INLINE=1``: with
the label-join worker's inline delivery (`streams.label_join.faust.delivery`).
"""

from __future__ import annotations

import os
import sys
import time

import faust

from convcg.contract import Topics

bootstrap, prefix, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
topics = Topics(prefix)
# the worker's own settings: acks off for the source topics (it commits itself), and with
# NOOP_QUIET=1 Faust's per-event Monitor sensor replaced by one that records nothing
quiet = os.environ.get("NOOP_QUIET") == "1"
extra = {"Monitor": "streams.label_join.faust.quiet_monitor:QuietMonitor"} if quiet else {}
inline = os.environ.get("NOOP_INLINE") == "1"
app = faust.App(f"{prefix}noop{'-inline' if inline else ''}", broker=f"kafka://{bootstrap}", store="memory://", web_enabled=False,
                autodiscover=False, consumer_auto_offset_reset="earliest", stream_buffer_maxsize=20_000,
                **extra)
source = app.topic(*topics.events, key_serializer="raw", value_serializer="raw", acks=False)
seen = {"n": 0, "t0": 0.0}


if inline:  # the worker's delivery of records without a wait_first each
    from streams.label_join.faust.delivery import install_inline_delivery

    @app.on_partitions_assigned.connect
    async def inline(app, assigned, **kwargs) -> None:  # noqa: ARG001 - signal API
        install_inline_delivery(app.consumer)


@app.agent(source)
async def count(stream):
    async for batch in stream.take_events(5000, within=0.2):
        if not seen["n"]:
            seen["t0"] = time.perf_counter()
        seen["n"] += len(batch)
        if seen["n"] >= total:
            # straight to fd 2: Faust's worker redirects sys.stdout into its (filtered) log
            os.write(2, f"RATE {seen['n'] / (time.perf_counter() - seen['t0']):.0f}\n".encode())
            os._exit(0)


if __name__ == "__main__":
    from faust.worker import Worker

    Worker(app, loglevel=os.environ.get("NOOP_LOGLEVEL", "error"), quiet=True).execute_from_commandline()
