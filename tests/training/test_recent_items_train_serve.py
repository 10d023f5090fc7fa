"""Training and serving encode the same engagement sequence for the same user at the same time.

One hand-made event log (repeated items, a second engagement of one impression, engagements
tied in time, one exactly at a query time, a user with none, more engagements than the stream
keeps) feeds both sides:

- serving: the real aggregates core (`streams.aggregates.worker.AggregatesWorker`, the records
  through the real event parsing) sends its feature updates through the real broker to the
  real features sink, which writes Feast's SQLite online store and the offline parquet; the
  retrieval side reads the user's features from the features HTTP service (its real source,
  `retrieval.user_features.HttpUserFeatureSource`) at each query time and makes the query
  dict as `/retrieve` does;
- training: `convcg dataset` (`features.dataset.build_training_set`, Feast's point-in-time
  join, and the merge_asof engine) over the labels of the log's impressions, as of each
  impression time, encoded as training examples are (`training.learn.rows.joined_rows`);
- the point-in-time protocol: `training.learn.sequences.SequenceFeatures` over the same
  log's `Interactions`.

For every (user, impression time) the three `QueryInputs` are equal: recent buckets exactly,
ages and dwells to float precision.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from types import SimpleNamespace

import numpy as np
import orjson
import pytest
import torch

from convcg.contract import Engagement, Impression, event_to_dict
from convcg.kafka.io import json_producer
from convcg.kafka.settings import KafkaSettings
from convcg.partitioning import partition_for
from features.dataset import build_training_set
from features.repo.definitions import EVENT_TIMESTAMP, stream_view_name
from features.offline import read_parts
from features.service import create_app as features_app
from features.settings import FeaturesSettings
from features.sink.worker import BackgroundSink, FeatureSink
from features.sink.updates import stream_schema
from model.encoding import encode_queries, queries_frame
from model.config import ModelConfig
from retrieval.user_features import HttpUserFeatureSource
from retrieval.validation import parse_retrieve
from streams.aggregates.settings import AggregateSettings
from streams.aggregates.worker import AggregatesWorker
from streams.kafka.output import OutputProducer
from streams.replay.datasets.event_log import EventLog, sort_events
from streams.settings import StreamSettings
from tests.conftest import TEST_PARTITIONS
from tests.support.feature_samples import sample_label
from tests.support.index_rigs import running_server
from training.learn.rows import joined_rows
from training.history import interactions_from_log
from training.learn.sequences import SequenceFeatures

pytestmark = pytest.mark.broker
T = 1_700_000_000.0
CONFIG = ModelConfig(recent_items=3)
STREAM = AggregateSettings(last_n=4)  # keeps more than the model reads: one may sit at the query time


#: (kind, event id, impression id, seconds after T, user, item, dwell ms); impressions "imp"
LOG = [
    ("imp", "ev-a1", "a1", 0, "u1", "i1", 0), ("eng", "e-a1", "a1", 10, "u1", "i1", 1000),
    ("imp", "ev-a2", "a2", 20, "u1", "i2", 0), ("eng", "e-a2", "a2", 30, "u1", "i2", 2500),
    ("eng", "e-a2-again", "a2", 35, "u1", "i2", 9000),  # the same impression again: not in the sequence
    ("imp", "ev-a3", "a3", 40, "u1", "i1", 0), ("eng", "e-a3", "a3", 50, "u1", "i1", 400),  # i1 again
    ("imp", "ev-a4", "a4", 60, "u1", "i3", 0), ("eng", "e-a4", "a4", 60.5, "u1", "i3", 100),
    ("imp", "ev-a5", "a5", 60.5, "u1", "i4", 0),  # asked exactly when i3 was engaged: i3 is not visible yet
    # tied in time; i6 is seen first (a lower catalog index) but sorts after i5 by id
    ("imp", "ev-a6", "a6", 70, "u1", "i6", 0), ("imp", "ev-a7", "a7", 75, "u1", "i5", 0),
    ("eng", "e-a6", "a6", 80, "u1", "i6", 300), ("eng", "e-a7", "a7", 80, "u1", "i5", 600),
    ("imp", "ev-a8", "a8", 90, "u1", "i2", 0),
    ("imp", "ev-a9", "a9", 200, "u1", "i3", 0),  # 6 engagements by then: more than the stream keeps
    ("imp", "ev-b1", "b1", 5, "u2", "i3", 0), ("eng", "e-b1", "b1", 15, "u2", "i3", 700),
    ("imp", "ev-b2", "b2", 25, "u2", "i3", 0), ("eng", "e-b2", "b2", 26, "u2", "i3", 800),
    ("imp", "ev-b3", "b3", 45, "u2", "i4", 0),
    ("eng", "e-b3-a", "b3", 46, "u2", "i4", 111), ("eng", "e-b3-b", "b3", 46, "u2", "i4", 222),  # e-b3-a first
    ("imp", "ev-b4", "b4", 100, "u2", "i1", 0),
    ("imp", "ev-c1", "c1", 30, "u3", "i2", 0), ("imp", "ev-c2", "c2", 95, "u3", "i5", 0),  # u3 never engages
]


def _log() -> EventLog:
    events = [Impression(eid, imp, T + ts, user, item, "adv1", "home", 0) if kind == "imp"
              else Engagement(eid, imp, T + ts, user, item, "click", dwell)
              for kind, eid, imp, ts, user, item, dwell in LOG]
    return EventLog(name="recent-items", events=sort_events(events))


class Feeder:
    """The log's records, topic by topic, into the aggregates core; its updates to the broker."""

    def __init__(self, bootstrap: str, topics, log: EventLog) -> None:
        settings = StreamSettings(kafka=KafkaSettings(bootstrap=bootstrap, topic_prefix=topics.prefix))
        self.output = OutputProducer(bootstrap)
        self.worker = AggregatesWorker(settings, self.output, STREAM)
        self.topics, self.pending, self.offsets = topics, list(log.events), {}
        self.newest: dict[str, float] = {}  # user -> newest event time fed

    def feed_through(self, ts: float) -> None:
        """Every event at or before ``ts`` not fed yet, then the updates they make."""
        now = time.time()
        batch = [e for e in self.pending if e.ts <= ts]
        self.pending = [e for e in self.pending if e.ts > ts]
        by_topic: dict[str, list] = {}
        for e in batch:
            topic = self.topics.of_event(e)
            partition = partition_for(e.user_id.encode(), TEST_PARTITIONS)
            offset = self.offsets.get((topic, partition), 0)
            self.offsets[(topic, partition)] = offset + 1
            by_topic.setdefault(topic, []).append(SimpleNamespace(
                topic=topic, partition=partition, offset=offset, timestamp=int(now * 1000),
                value=orjson.dumps(event_to_dict(e))))
            self.newest[e.user_id] = max(self.newest.get(e.user_id, e.ts), e.ts)
        for topic, records in by_topic.items():
            records.sort(key=lambda r: r.partition)
            assert sum(self.worker.count(topic, records, now).values()) == len(records)
        self.worker.send_updates(now)
        self.output.flush_blocking()


def _offline_users(s: FeaturesSettings) -> dict[str, set]:
    rows = read_parts(s.offline_root / stream_view_name("user"), stream_schema("user")).to_pandas()
    out: dict[str, set] = {}
    for user, ts in zip(rows["user_id"], rows[EVENT_TIMESTAMP]):
        out.setdefault(user, set()).add(ts.timestamp())
    return out


def _wait_until_stored(s: FeaturesSettings, newest: dict[str, float], timeout: float = 60.0) -> None:
    """The sink writes online, then offline: each user's newest update is offline, so online too."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stored = _offline_users(s)
        if all(any(abs(t - ts) < 1e-5 for t in stored.get(u, ())) for u, ts in newest.items()):
            return
        time.sleep(0.1)
    raise AssertionError(f"the sink did not store {newest}")


def _assert_same(got, want, what: str) -> None:
    assert torch.equal(got.recent, want.recent), (what, got.recent, want.recent)
    np.testing.assert_allclose(got.recent_age.numpy(), want.recent_age.numpy(), rtol=1e-6, err_msg=what)
    np.testing.assert_allclose(got.recent_dwell.numpy(), want.recent_dwell.numpy(), rtol=1e-6, err_msg=what)


def test_training_and_serving_encode_the_same_sequence_for_the_same_user_at_the_same_time(broker, topics, tmp_path):
    log = _log()
    impressions = [e for e in log.events if isinstance(e, Impression)]
    s = FeaturesSettings(repo_dir=tmp_path / "feast", labels_dir=tmp_path / "labels", online_store="sqlite",
                         kafka=KafkaSettings(topic_prefix=topics.prefix), project=f"t{uuid.uuid4().hex[:10]}",
                         consumer_group=f"g-{topics.prefix}", offline_flush_seconds=0.2)
    labels = json_producer(broker.bootstrap)
    for e in impressions:
        labels.send(topics.labels, key=e.user_id.encode(),
                    value=orjson.dumps(sample_label(e.impression_id, e.user_id, e.item_id, "adv1", e.ts).to_dict()))
    labels.flush()
    labels.close()

    feeder = Feeder(broker.bootstrap, topics, log)
    online: dict[str, object] = {}  # impression id -> QueryInputs from the online read at its time
    bg = BackgroundSink(FeatureSink(s, broker.bootstrap)).start()
    try:
        with running_server(features_app(s)) as url:
            source = HttpUserFeatureSource(url, timeout_s=10)
            for at in sorted({e.ts for e in impressions}):
                feeder.feed_through(at)  # the state at this time (an engagement at it included)
                _wait_until_stored(s, feeder.newest)
                for e in (e for e in impressions if e.ts == at):
                    query = parse_retrieve({"user_id": e.user_id}, 10, 100).query(source.get(e.user_id), now=at)
                    online[e.impression_id] = encode_queries(queries_frame([query]), CONFIG)
            source.close()
        feeder.feed_through(np.inf)
        _wait_until_stored(s, feeder.newest)
        time.sleep(0.5)  # the labels' offline flush
        as_of = datetime.now(timezone.utc)
        datasets = {engine: build_training_set(s, as_of=as_of, progress=False, write=False, engine=engine).frame
                    for engine in ("feast", "asof")}
    finally:
        bg.stop()

    sequences = SequenceFeatures(interactions_from_log(log), CONFIG)
    by_impression = {e.impression_id: e for e in impressions}
    for engine, frame in datasets.items():
        assert sorted(frame["impression_id"]) == sorted(by_impression), engine
        offline = encode_queries(frame, CONFIG)  # each row as of its impression time
        pit = sequences.at(frame["user_id"].to_numpy(object), frame["impression_ts"].to_numpy(np.float64),
                           frame["surface"].tolist())
        _assert_same(offline, pit, f"{engine} dataset vs SequenceFeatures")
        _assert_same(joined_rows(frame, None, CONFIG).rows.examples.queries, pit, f"training examples of the {engine} dataset")
        for row, impression_id in enumerate(frame["impression_id"]):
            _assert_same(online[impression_id], offline.select([row]), f"online vs {engine} dataset at {impression_id}")

    # the cases the log was made for, read from the online side
    def items_at(impression_id):
        recent = online[impression_id].recent[0]
        names = {int(b): i for i, b in zip(sequences.inter.item_ids, sequences.item_bucket)}
        return [names[int(b)] for b in recent if int(b) != 0]

    def ages_at(impression_id):
        return online[impression_id].recent_age[0].tolist()

    assert items_at("a3") == ["i2", "i1"] and online["a3"].recent_dwell[0].tolist() == [2500.0, 1000.0, 0.0]
    assert items_at("a5") == ["i1", "i2", "i1"] and ages_at("a5") == [10.5, 30.5, 50.5]  # i3 at 60.5 not yet
    assert items_at("a8") == ["i6", "i5", "i3"]  # a tie in time: by item id, as the PIT data orders it
    assert items_at("a9") == ["i6", "i5", "i3"] and ages_at("a9") == [120.0, 120.0, 139.5]
    assert items_at("b4") == ["i4", "i3", "i3"] and online["b4"].recent_dwell[0].tolist() == [111.0, 800.0, 700.0]
    assert items_at("a1") == [] and items_at("c2") == []
