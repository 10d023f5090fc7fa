"""The inline delivery of Faust's fetcher (`streams.label_join.faust.delivery`): the same outcomes as
``mode.Service.wait_first``, without its tasks when the delivery does not wait; and a check
that fails when Faust's fetcher stops making the call it recognises."""

from __future__ import annotations

import asyncio
import inspect
import re

from mode import Service
from mode.utils.locks import Event

from streams.label_join.faust.delivery import install_inline_delivery


class FakeConsumer(Service):
    """What the wrapper reads of Faust's consumer: ``suspend_flow`` and the Service events."""

    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = Event()


def run(coro):
    return asyncio.run(coro)


def test_faust_still_delivers_each_record_with_this_wait_first_call():
    from faust.transport.consumer import Consumer

    source = re.sub(r"\s+", "", inspect.getsource(Consumer._drain_messages))
    assert "awaitself.wait_first(callback(message),self.suspend_flow.wait())" in source


def test_a_delivery_that_does_not_wait_runs_inline_without_tasks():
    async def main():
        consumer = FakeConsumer()
        assert install_inline_delivery(consumer) and install_inline_delivery(consumer)  # once
        delivered = []

        async def callback(message):
            delivered.append(message)
            return "done"

        tasks_before = len(asyncio.all_tasks())
        results = await consumer.wait_first(callback("m1"), consumer.suspend_flow.wait())
        assert len(asyncio.all_tasks()) == tasks_before
        return delivered, results

    delivered, results = run(main())
    assert delivered == ["m1"] and results.results == ["done"] and not results.stopped


def test_a_delivery_that_waits_goes_on_and_finishes():
    async def main():
        consumer = FakeConsumer()
        install_inline_delivery(consumer)
        gate, steps = asyncio.get_running_loop().create_future(), []

        async def callback(message):
            steps.append("first")
            value = await gate  # a full queue: the delivery waits
            steps.append(value)
            return value

        asyncio.get_running_loop().call_later(0.05, gate.set_result, "put")
        results = await consumer.wait_first(callback("m"), consumer.suspend_flow.wait())
        return steps, results

    steps, results = run(main())
    assert steps == ["first", "put"] and results.results == ["put"] and not results.stopped


def test_a_waiting_delivery_loses_to_a_flow_suspension_and_is_cancelled():
    async def main():
        consumer = FakeConsumer()
        install_inline_delivery(consumer)
        cancelled = []

        async def callback(message):
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.append(message)
                raise

        asyncio.get_running_loop().call_later(0.05, consumer.suspend_flow.set)
        results = await asyncio.wait_for(consumer.wait_first(callback("m"), consumer.suspend_flow.wait()), 5)
        await asyncio.sleep(0)  # let the cancellation land
        return results, cancelled

    results, cancelled = run(main())
    assert results.results == [True] and cancelled == ["m"]


def test_while_the_flow_is_suspended_the_original_race_decides():
    async def main():
        consumer = FakeConsumer()
        install_inline_delivery(consumer)
        consumer.suspend_flow.set()
        started = []

        async def callback(message):
            started.append(message)
            await asyncio.sleep(10)

        results = await asyncio.wait_for(consumer.wait_first(callback("m"), consumer.suspend_flow.wait()), 5)
        return results, started

    results, started = run(main())
    assert results.results == [True]  # the suspension won, as without the wrapper


def test_an_error_in_the_delivery_propagates():
    async def main():
        consumer = FakeConsumer()
        install_inline_delivery(consumer)

        async def callback(message):
            raise ValueError("bad record")

        await consumer.wait_first(callback("m"), consumer.suspend_flow.wait())

    import pytest

    with pytest.raises(ValueError, match="bad record"):
        run(main())
