"""A join partition whose state cannot be restored stops `convcg worker` with an error (issue
28, item 5): its supervisor restarts it, instead of a worker that runs on without the partition."""

from __future__ import annotations

import subprocess
import time

import orjson
import pytest

from convcg.kafka.broker import create_topics
from convcg.contract import Impression
from convcg.kafka.io import json_producer
from convcg.partitioning import partition_for
from streams.label_join.state import STATE_TABLE
from tests.support.streams_harness import produce_events, start_worker

pytestmark = pytest.mark.broker
PARTITIONS = 3


def test_a_failed_restore_exits_with_an_error(broker, topics, tmp_path):
    app_id = f"{topics.prefix}app"
    imp = Impression("e1", "imp1", time.time() - 600, "user1", "item1", "adv", "home", 0)
    partition = partition_for(imp.user_id.encode(), PARTITIONS)
    changelog = f"{app_id}-{STATE_TABLE}-changelog"
    create_topics(broker.bootstrap, [*topics.all(), changelog], PARTITIONS)
    p = json_producer(broker.bootstrap)  # a pending impression's state without its fields
    p.send(changelog, orjson.dumps({"p": partition, "s": {}}), orjson.dumps("imp0"), partition=partition)
    p.close()
    produce_events(broker.bootstrap, topics, [imp], PARTITIONS, close=False)
    worker = start_worker(broker.bootstrap, topics, app_id, tmp_path / "worker.log")
    try:
        code = worker.wait(timeout=120)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the worker went on without the partition: {worker.tail()}") from None
    finally:
        worker.stop()
    assert code != 0
