"""Watermarks you can trust, on the real worker and broker (issue 28, items 1 and 3): a producer
watermark or an event stamped ahead of the clock is dead-lettered with its reason and decides
nothing; only a trusted close (`convcg replay --close`'s header) may lie past every window, and
only where the worker's settings allow it."""

from __future__ import annotations

import base64
import time

import orjson
import pytest

from convcg.contract import Impression, Topics
from convcg.kafka.io import json_producer, read_topic
from streams.label_join.labels import dedupe
from streams.label_join.rules import LabelRules
from streams.replay.watermarks import closing_watermark, send_watermark
from tests.support.streams_harness import produce_events, start_worker

pytestmark = pytest.mark.broker
PARTITIONS = 3
RULES = LabelRules()
#: ticks every 0.5 s, and a caught-up source stops holding the watermark after 0.5 s
FAST_IDLE = dict(CONVCG_STREAMS_IDLE_SOURCE_AFTER_S=0.5)


def impressions(now: float, n: int = 12) -> list[Impression]:
    """Impressions ten minutes old, of users on every partition: none is due to be decided
    (the negative window is an hour) unless the watermark is moved past them."""
    return [Impression(f"e{k}", f"imp{k}", now - 600 + k, f"user{k}", f"item{k}", "adv", "home", 0)
            for k in range(n)]


def dead_letters(bootstrap: str, topics: Topics, reason: str, n: int, worker, timeout: float = 90.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    got: list[dict] = []
    while time.monotonic() < deadline:
        assert worker.alive, f"the worker exited with {worker.returncode}: {worker.tail()}"
        got = [d for d in read_topic(bootstrap, topics.dead_letters, timeout=3, idle=0.3) if d["reason"] == reason]
        if len(got) >= n:
            return got
        time.sleep(0.5)
    raise AssertionError(f"{len(got)} dead letters with reason {reason}, expected {n}: {worker.tail()}")


def labels_after_quiet(bootstrap: str, topics: Topics, seconds: float = 5.0) -> list[dict]:
    """The labels once the worker has had several idle ticks to move its watermarks."""
    time.sleep(seconds)
    return read_topic(bootstrap, topics.labels, timeout=3, idle=0.3)


def close_and_collect(bootstrap: str, topics: Topics, last_ts: float, expected: int, worker) -> list[dict]:
    p = json_producer(bootstrap)
    send_watermark(p, topics, PARTITIONS, closing_watermark(last_ts, RULES))  # a trusted close
    p.close()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert worker.alive, worker.tail()
        labels = dedupe(read_topic(bootstrap, topics.labels, timeout=3, idle=0.3))
        if len(labels) >= expected:
            return labels
        time.sleep(0.5)
    raise AssertionError(f"the trusted close decided {len(labels)} of {expected} impressions: {worker.tail()}")


def test_an_untrusted_watermark_far_ahead_is_dead_lettered_and_decides_nothing(broker, topics, tmp_path):
    now = time.time()
    imps = impressions(now)
    worker = start_worker(broker.bootstrap, topics, f"{topics.prefix}app", tmp_path / "worker.log", **FAST_IDLE)
    try:
        produce_events(broker.bootstrap, topics, imps, PARTITIONS, close=False)
        p = json_producer(broker.bootstrap)  # any producer's record, without the trusted-close header
        for topic in topics.events:
            for partition in range(PARTITIONS):
                p.send(topic, orjson.dumps({"watermark": 1e18}), partition=partition)
        p.close()
        refused = dead_letters(broker.bootstrap, topics, "watermark_in_future", 3 * PARTITIONS, worker)
        assert {d["partition"] for d in refused} == set(range(PARTITIONS))
        assert labels_after_quiet(broker.bootstrap, topics) == []  # no impression was decided by it
        labels = close_and_collect(broker.bootstrap, topics, imps[-1].ts, len(imps), worker)
    finally:
        worker.stop()
    assert sorted(l["impression_id"] for l in labels) == sorted(i.impression_id for i in imps)
    assert {l["kind"] for l in labels} == {"negative"}


def test_a_trusted_close_is_refused_where_the_settings_forbid_it(broker, topics, tmp_path):
    now = time.time()
    imps = impressions(now)
    worker = start_worker(broker.bootstrap, topics, f"{topics.prefix}app", tmp_path / "worker.log",
                          CONVCG_STREAMS_TRUSTED_CLOSE="false", **FAST_IDLE)
    try:
        produce_events(broker.bootstrap, topics, imps, PARTITIONS, close=True)  # with the header
        dead_letters(broker.bootstrap, topics, "watermark_in_future", 3 * PARTITIONS, worker)
        assert labels_after_quiet(broker.bootstrap, topics) == []
    finally:
        worker.stop()


def test_an_event_stamped_hours_ahead_is_dead_lettered_and_decides_nothing(broker, topics, tmp_path):
    """Local time sent as UTC: one impression 7 h ahead once made every pending impression of its
    partition negative as soon as the sources went idle (the bound was a day ahead)."""
    now = time.time()
    imps = impressions(now)
    ahead = Impression("e-ahead", "imp-ahead", now + 7 * 3600, imps[0].user_id, "item-x", "adv", "home", 0)
    worker = start_worker(broker.bootstrap, topics, f"{topics.prefix}app", tmp_path / "worker.log", **FAST_IDLE)
    try:
        produce_events(broker.bootstrap, topics, imps + [ahead], PARTITIONS, close=False)
        (refused,) = dead_letters(broker.bootstrap, topics, "timestamp_in_future", 1, worker)
        assert orjson.loads(base64.b64decode(refused["original_b64"]))["impression_id"] == "imp-ahead"
        assert labels_after_quiet(broker.bootstrap, topics) == []
        labels = close_and_collect(broker.bootstrap, topics, imps[-1].ts, len(imps), worker)
    finally:
        worker.stop()
    assert sorted(l["impression_id"] for l in labels) == sorted(i.impression_id for i in imps)
