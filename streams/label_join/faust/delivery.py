"""`install_inline_delivery`: Faust's fetcher hands a record to its streams without four tasks.

Faust's fetcher (``faust.transport.consumer.Consumer._drain_messages``, faust-streaming 0.15)
delivers every record with

    await self.wait_first(callback(message), self.suspend_flow.wait())

``mode.Service.wait_first`` makes a task of the delivery, of the flow's suspension, of the
consumer's stop and of its crash, and waits for the first with ``asyncio.wait``: per record.
In the label-join worker that is about a quarter of its Python time (py-spy, in
`docs/results/2026-12-07-apache-kafka.md`), while the delivery itself (the conductor's
``on_message``: decode the record, put the event on the stream's queue) nearly always finishes
without waiting.

The consumer's ``wait_first`` is wrapped. A call of exactly that shape, made while the flow is
not suspended and the consumer neither stopped nor crashed, runs the delivery's first step
inline. If the delivery finishes there, the call returns what ``wait_first`` returns when the
delivery wins the race (nothing else ran in between, so nothing else could have won). If it
has to wait (a full stream queue, suspended flow control), the started delivery goes on racing
the suspension, the stop and the crash in the original ``wait_first``, as before. Every other
call goes to the original unchanged. `tests/streams/label_join/faust/test_faust_delivery.py` fails when Faust's call
changes shape.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

_MARK = "_convcg_inline_delivery"


class _Resumed:
    """An already started coroutine, continued from the awaitable it yielded when awaited."""

    __slots__ = ("coro", "pending")

    def __init__(self, coro, pending) -> None:
        self.coro, self.pending = coro, pending

    def __await__(self):
        coro, pending = self.coro, self.pending
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation or an error thrown in: hand it to the coroutine
                try:
                    pending = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as done:
                    return done.value


def install_inline_delivery(consumer: Any) -> bool:
    """Wrap ``consumer.wait_first`` (once); False when the consumer lacks what it relies on."""
    if getattr(consumer, _MARK, False):
        return True
    suspend_flow = getattr(consumer, "suspend_flow", None)
    stopped, crashed = getattr(consumer, "_stopped", None), getattr(consumer, "_crashed", None)
    original = getattr(consumer, "wait_first", None)
    if None in (suspend_flow, stopped, crashed, original):
        log.warning("Faust's consumer changed: records are delivered the slow way (one wait_first each)")
        return False
    from mode.services import WaitResults

    flow_wait_code = type(suspend_flow).wait.__code__

    def is_flow_wait(coro) -> bool:
        frame = getattr(coro, "cr_frame", None)
        return getattr(coro, "cr_code", None) is flow_wait_code and frame is not None \
            and frame.f_locals.get("self") is suspend_flow

    async def wait_first(*coros, timeout=None):
        if (len(coros) == 2 and timeout is None and asyncio.iscoroutine(coros[0]) and is_flow_wait(coros[1])
                and not suspend_flow.is_set() and not stopped.is_set() and not crashed.is_set()):
            delivery, flow_wait = coros
            try:
                pending = delivery.send(None)
            except StopIteration as done:
                flow_wait.close()
                return WaitResults([delivery], [done.value], False)
            except BaseException:
                flow_wait.close()
                raise
            return await original(_Resumed(delivery, pending), flow_wait)
        return await original(*coros, timeout=timeout)

    consumer.wait_first = wait_first
    setattr(consumer, _MARK, True)
    return True
