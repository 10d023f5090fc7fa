"""Hypothesis over records on the labels and feature-updates topics, each batch followed by a
restart of the component that reads them (the features sink; the trainer), on the real broker
and stores. After every example: the component did not fail, its committed offsets reached the
end of the topics (no wedge behind a poison record), and the control label / feature row sent
after the fuzzed records is stored exactly once with its values (issue 28's tests)."""

from __future__ import annotations

import time

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convcg.kafka.io import json_producer
from convcg.kafka.settings import KafkaSettings
from features.offline import read_parts
from features.online.read import OnlineReader
from features.sink.worker import BackgroundSink, FeastWriter, FeatureSink
from features.sink.updates import LABEL_SCHEMA
from tests.support.feature_samples import full_update, sample_label
from tests.features.test_sink import T, _committed, _settings, _wait_for
from tests.features.test_sink_poison import poison_labels, poison_updates
from tests.convcg.test_fuzz_labels_updates import messages
from training.config import TrainingSettings
from training.trainer.service import TrainerService

pytestmark = pytest.mark.broker
RESTARTS = settings(max_examples=4, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def _wire(cases: list) -> list[bytes]:
    return [orjson.dumps(x) if isinstance(x, dict) else x for x in cases]


@st.composite
def with_poison(draw, cases: list[bytes]) -> list[bytes]:
    """Up to four fuzzed records with every one of ``cases`` (each decodes as JSON, but no store
    holds it) among them, each at a drawn place."""
    out = draw(st.lists(messages, max_size=4))
    for case in cases:
        out.insert(draw(st.integers(0, len(out))), case)
    return out


#: the control labels' time: after every valid fuzzed label (up to 2e9), so none of those puts a
#: control behind its partition's dedupe horizon (which is the horizon working, not a wedge)
CONTROL_TS = 2.1e9
label_records = with_poison(_wire(poison_labels()))
update_records = with_poison(_wire(poison_updates()))


def _send(bootstrap: str, topic: str, raws: list[bytes]) -> None:
    p = json_producer(bootstrap)
    for raw in raws:
        p.send(topic, raw, key=b"k")
    p.flush()


def test_the_sink_restarted_after_fuzzed_records_neither_wedges_nor_loses_the_control(broker, topics, tmp_path):
    s = _settings(tmp_path, topics)
    store = FeastWriter(s).store
    sent = {topics.labels: 0, topics.feature_updates: 0}
    controls = []

    @RESTARTS
    @given(label_records, update_records)
    def fuzz(on_labels, on_updates):
        n = len(controls)
        label = sample_label(f"control{n}", "u1", "i1", "a1", CONTROL_TS + n)
        update = full_update("item", f"control{n}", T + n, 100 + n)
        controls.append((label, update))
        _send(broker.bootstrap, topics.labels, on_labels + [orjson.dumps(label.to_dict())])
        _send(broker.bootstrap, topics.feature_updates, on_updates + [orjson.dumps(update.to_dict())])
        sent[topics.labels] += len(on_labels) + 1
        sent[topics.feature_updates] += len(on_updates) + 1
        bg = BackgroundSink(FeatureSink(s, broker.bootstrap, writer=FeastWriter(s, store=store))).start()  # a restart
        try:
            for topic, count in sent.items():
                _wait_for(lambda: _committed(broker.bootstrap, s.consumer_group, topic) == count, 60,
                          f"{topic} committed to its end")
        finally:
            bg.stop()  # raises what the sink failed with, if anything
        stored = read_parts(s.labels_dir, LABEL_SCHEMA).to_pandas()
        for lab, up in controls:
            rows = stored[stored["label_id"] == lab.label_id]
            assert len(rows) == 1 and rows.iloc[0]["label_ts"] == lab.label_ts
            got = OnlineReader(store).read("item_stream", [up.entity_id], ["impressions_1h"])[0]
            assert got["features"]["impressions_1h"] == up.features["impressions_1h"] and got["event_ts"] == up.event_ts

    fuzz()
    assert len(controls) == RESTARTS.max_examples


def test_the_trainer_restarted_after_fuzzed_labels_neither_wedges_nor_loses_the_control(broker, topics, tmp_path):
    ts = TrainingSettings(registry_root=tmp_path / "registry", label_store=tmp_path / "store",
                          kafka=KafkaSettings(bootstrap=broker.bootstrap, topic_prefix=topics.prefix),
                          consumer_group=f"g-{topics.prefix}", min_labels_first_train=1_000_000)
    sent = [0]
    controls = []

    @RESTARTS
    @given(label_records)
    def fuzz(on_labels):
        label = sample_label(f"control{len(controls)}", "u1", "i1", "a1", CONTROL_TS + len(controls))
        controls.append(label)
        _send(broker.bootstrap, topics.labels, on_labels + [orjson.dumps(label.to_dict())])
        sent[0] += len(on_labels) + 1
        service = TrainerService(ts)  # a restart: its dedupe horizon from its store
        try:
            deadline = time.monotonic() + 60
            while not any(p["label_id"] == label.label_id for p in service.pending):
                assert time.monotonic() < deadline, "the control label never arrived"
                service.poll_once()
            service.take_waiting_labels()
            service.step()  # stores, flushes the dead letters, commits; too few labels to train on
            assert _committed(broker.bootstrap, ts.consumer_group, topics.labels) == sent[0]
        finally:
            service.close()
        stored = service.store.load()
        for lab in controls:
            rows = stored[stored["label_id"] == lab.label_id]
            assert len(rows) == 1 and rows.iloc[0]["label_ts"] == lab.label_ts

    fuzz()
    assert len(controls) == RESTARTS.max_examples
