"""Shared fixtures: one real broker per test session, isolated topics per test."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from convcg.broker import create_topics, find_or_start_broker
from convcg.contract import Topics

for _noisy in ("kafka", "aiokafka", "faust", "mode"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

TEST_PARTITIONS = 3


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """KAFKA_BOOTSTRAP if set; else testcontainers Kafka if Docker answers; else a local Apache
    Kafka 4.4 on a temporary folder."""
    log_path = Path(tmp_path_factory.mktemp("broker")) / "broker.log"
    b = find_or_start_broker(log_path=log_path)
    yield b
    b.stop()


@pytest.fixture
def topics(broker) -> Topics:
    """A fresh set of the project's topics, unique to this test."""
    t = Topics(prefix=f"t{uuid.uuid4().hex[:8]}-")
    create_topics(broker.bootstrap, t.all(), TEST_PARTITIONS)
    return t
