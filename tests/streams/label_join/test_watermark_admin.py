"""`convcg watermarks show|reset` on the real broker: a partition whose watermark went wrong
(here 1e18, as an unbounded producer watermark once left it in the changelog for good) is
shown, reset while the workers are stopped, and the worker restores the reset value."""

from __future__ import annotations

import time

import orjson
import pytest
from click.testing import CliRunner

from convcg.kafka.broker import create_topics
from convcg.contract import Impression
from convcg.kafka.io import json_producer, read_topic
from convcg.partitioning import partition_for
from loop.cli import main
from streams.kafka.changelog_read import read_partition
from streams.label_join.joiner import ImpressionState
from streams.label_join.state import WATERMARK_KEY, restore_entries
from streams.label_join.watermark_admin import changelog_topic
from tests.support.streams_harness import produce_events, start_worker, wait_until_members_hold_partitions

pytestmark = pytest.mark.broker
PARTITIONS = 3


def cli(*args: str):
    return CliRunner().invoke(main, ["watermarks", *args], catch_exceptions=False)


def test_show_and_reset_a_partition_watermark(broker, topics, tmp_path):
    app_id = f"{topics.prefix}app"
    now = time.time()
    imp = Impression("e1", "imp1", now - 600, "user1", "item1", "adv", "home", 0)
    bad = partition_for(imp.user_id.encode(), PARTITIONS)
    topic = changelog_topic(app_id)
    create_topics(broker.bootstrap, [*topics.all(), topic], PARTITIONS)
    p = json_producer(broker.bootstrap)
    p.send(topic, orjson.dumps({"p": bad, "wm": 1e18}), orjson.dumps(WATERMARK_KEY % bad), partition=bad)
    p.send(topic, orjson.dumps({"p": bad, "s": ImpressionState(imp).to_dict()}), orjson.dumps("imp1"), partition=bad)
    p.close()
    where = ["--bootstrap", broker.bootstrap, "--app-id", app_id]

    shown = cli("show", *where)
    assert shown.exit_code == 0, shown.output
    assert f"partition {bad}: watermark 1e+18" in shown.output and "1 pending impressions" in shown.output
    assert cli("reset", "--partition", str(bad), "--to", "1e18", *where).exit_code != 0  # ahead of the clock

    target = now - 3600
    done = cli("reset", "--partition", str(bad), "--to", repr(target), *where)
    assert done.exit_code == 0, done.output
    assert f"after:  partition {bad}: watermark {target!r}" in done.output
    # the bytes the worker restores from say so
    assert restore_entries(bad, read_partition(broker.bootstrap, topic, bad))[1] == target

    worker = start_worker(broker.bootstrap, topics, app_id, tmp_path / "worker.log")
    try:
        wait_until_members_hold_partitions(broker.bootstrap, app_id, 1, [worker])
        refused = cli("reset", "--partition", str(bad), "--to", repr(target), *where)
        assert refused.exit_code != 0 and "stop the workers first" in refused.output
        # at the restored watermark a new impression waits for its window instead of being
        # decided at once (at 1e18 it was labelled negative the moment it arrived)
        later = Impression("e2", "imp2", now - 500, "user1", "item2", "adv", "home", 0)
        produce_events(broker.bootstrap, topics, [later], PARTITIONS, close=False)
        time.sleep(8)
        assert worker.alive, worker.tail()
        assert read_topic(broker.bootstrap, topics.labels, timeout=3, idle=0.3) == []
    finally:
        worker.stop()
    assert restore_entries(bad, read_partition(broker.bootstrap, topic, bad))[1] >= target
