"""The Faust fence: every private Faust (and Faust-built aiokafka) attribute, method and call
shape that `streams/label_join/faust/` relies on, checked on the installed faust-streaming. An
upgrade that moves any of them fails here, by name, before a worker misbehaves. (The live
checks are beside it: test_consumer_port.py runs the port on a real Faust consumer and broker,
test_faust_delivery.py the inline delivery, test_hole_read.py the hole read.)"""

from __future__ import annotations

import inspect
import re

import faust
import pytest
from faust.sensors import Monitor
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode import Service

from streams.label_join.faust.hole_read import HoleRecord
from streams.label_join.faust.quiet_monitor import QuietMonitor

#: the faust-streaming release this fence was last checked against (pyproject.toml pins it)
FENCED_RELEASE = "0.15.3"


def _source(obj) -> str:
    return re.sub(r"\s+", "", inspect.getsource(obj))


def _params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_the_installed_faust_is_the_fenced_release():
    assert faust.__version__ == FENCED_RELEASE, (
        f"faust-streaming {faust.__version__} is installed, the fence was checked against {FENCED_RELEASE}: "
        "re-read streams/label_join/faust/ against it (every other test here), then update FENCED_RELEASE")


def test_consumer_port_private_committed_offsets_and_commit():
    """`FaustConsumerPort.committed` reads ``Consumer._committed_offset`` (filled on seek and
    commit); `.commit` calls ``Consumer._commit_offsets(offsets)``; the generation id and
    ``highwater(tp)`` are public."""
    assert "self._committed_offset" in _source(faust_consumer.Consumer.__init__)
    assert "self._committed_offset[tp]=" in _source(faust_consumer.Consumer._commit_offsets) \
        or "self._committed_offset.update" in _source(faust_consumer.Consumer._commit_offsets)
    assert _params(faust_consumer.Consumer._commit_offsets)[:2] == ["self", "offsets"]
    assert inspect.iscoroutinefunction(faust_consumer.Consumer._commit_offsets)
    assert _params(faust_consumer.Consumer.highwater) == ["self", "tp"]
    assert hasattr(faust.App, "consumer_generation_id")


def test_fetch_tuning_reaches_the_fetcher_through_faust_privates():
    """`tune_fetches` walks ``app.consumer._thread._consumer._fetcher`` and sets its
    ``_fetch_max_wait_ms`` / ``_fetch_min_bytes``, because Faust hard-codes the wait (1500 ms)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.consumer.fetcher import Fetcher

    assert issubclass(faust_aiokafka.Consumer, faust_consumer.ThreadDelegateConsumer)
    assert "self._thread=" in _source(faust_consumer.ThreadDelegateConsumer.__init__)
    thread_source = _source(faust_aiokafka.AIOKafkaConsumerThread)
    assert "self._consumer=" in thread_source
    assert "fetch_max_wait_ms=1500" in thread_source  # still fixed: the tuning is still needed
    assert "self._fetcher=" in _source(AIOKafkaConsumer)
    fetcher_init = _source(Fetcher.__init__)
    assert "self._fetch_max_wait_ms=" in fetcher_init and "self._fetch_min_bytes=" in fetcher_init
    assert "self._fetch_max_wait_ms" in _source(Fetcher).replace(fetcher_init, "")  # read per request
    assert "self._fetch_min_bytes" in _source(Fetcher).replace(fetcher_init, "")


@pytest.mark.parametrize("hook", ["on_message_in", "on_stream_event_in", "on_stream_event_out", "on_message_out",
                                  "track_tp_end_offset"])
def test_quiet_monitor_overrides_monitor_hooks_with_their_signatures(hook):
    """`QuietMonitor` replaces these per-record hooks of Faust's Monitor (set by the app's
    ``Monitor=`` setting): each must still exist there, called with the same parameters."""
    assert issubclass(QuietMonitor, Monitor)
    assert _params(getattr(Monitor, hook)) == _params(getattr(QuietMonitor, hook))
    assert "Monitor" in inspect.signature(faust.App.__init__).parameters or hasattr(faust.Settings, "Monitor")


def test_inline_delivery_wraps_the_call_faust_makes_per_record():
    """`install_inline_delivery` wraps ``Consumer.wait_first`` for the call ``_drain_messages``
    makes per record, and reads the Service's ``_stopped`` / ``_crashed`` events and the
    consumer's ``suspend_flow``; it answers as ``wait_first`` does, with ``WaitResults``."""
    from mode.services import WaitResults

    assert "awaitself.wait_first(callback(message),self.suspend_flow.wait())" in \
        _source(faust_consumer.Consumer._drain_messages)
    assert "self.suspend_flow=" in _source(faust_consumer.Consumer.__init__)
    service_init = _source(Service.__init__)
    assert "self._stopped=" in service_init and "self._crashed=" in service_init
    assert _params(Service.wait_first) == ["self", "coros", "timeout"]
    assert WaitResults._fields == ("done", "results", "stopped")


def test_hole_records_carry_the_fields_of_a_faust_message_the_join_reads():
    """Records re-read from a hole stand in for Faust messages: the same field names."""
    from faust.types import Message

    assert set(HoleRecord.__dataclass_fields__) <= set(Message.__slots__)
