"""`QuietMonitor`: Faust's Monitor sensor without its per-record bookkeeping.

Faust's default Monitor updates several dicts and deques and reads the clock for every record
in, every stream event in/out and every record out (its in-memory stats for Faust's web
views, which the worker does not serve): a measurable share of the per-record cost. The
worker's own Prometheus metrics are counted per batch instead. Everything else (commits,
rebalances, sends) is still recorded.
"""

from __future__ import annotations

from typing import Any

from faust.sensors import Monitor


class QuietMonitor(Monitor):
    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None) -> None:
        pass

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def track_tp_end_offset(self, tp: Any, offset: int) -> None:
        pass
