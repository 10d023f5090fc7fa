"""A restore that fails stops `convcg aggregates` with an error (issue 28, item 5): aiokafka
swallows what an assignment callback raises, and the worker used to go on without the
partition's stage, reading its records again forever (neither crashing nor moving on)."""

from __future__ import annotations

import subprocess

import pytest

from convcg.kafka.broker import create_topics
from convcg.kafka.io import json_producer
from tests.support.streams_harness import start_component

pytestmark = pytest.mark.broker
PARTITIONS = 3


def test_a_failed_restore_exits_with_an_error_instead_of_livelocking(broker, topics, tmp_path):
    create_topics(broker.bootstrap, topics.all(), PARTITIONS)
    p = json_producer(broker.bootstrap)  # state its restore cannot read (a seen-ids batch that is not JSON)
    p.send(topics.aggregates_changelog("user"), b"{not json", b"s|0000000001", partition=1)
    p.close()
    proc = start_component(["aggregates"], broker.bootstrap, topics, tmp_path / "agg.log")
    try:
        code = proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the worker neither crashed nor moved on: {proc.tail()}") from None
    finally:
        proc.stop()
    assert code != 0
    log = (tmp_path / "agg.log").read_text()
    assert "restoring the assigned partitions failed" in log, log[-3000:]
