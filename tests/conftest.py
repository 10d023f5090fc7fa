"""Shared fixtures: one real broker and one private Redis per test session, isolated topics per
test, and a tripwire on the fixed ports of services no test may assume (Redis 6379,
PostgreSQL 5432)."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import pytest

from convcg.contract import Topics
from convcg.kafka.broker import create_topics, find_or_start_broker
from tests.support.port_tripwire import PortTripwire

for _noisy in ("kafka", "aiokafka", "faust", "mode"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

TEST_PARTITIONS = 3
#: well-known ports of services that are not pre-started on these machines
FIXED_PORTS = (6379, 5432)
_tripwire = PortTripwire(FIXED_PORTS)


def pytest_sessionstart(session):
    _tripwire.start()


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if any test (or a process it started) connected to a fixed port."""
    _tripwire.stop()
    if _tripwire.hits:
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            f"FIXED PORT REACHED: {_tripwire.describe()} (use the session's private servers)", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_session_broker: list = []


def pytest_collection_modifyitems(items):
    """Every test that uses the session's broker (directly or through another fixture) carries the
    ``broker`` marker, so ``pytest -m "not broker"`` runs the suite that needs no Kafka. Tests that
    start a broker of their own are marked where they are written."""
    for item in items:
        if "broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.broker)


def pytest_terminal_summary(terminalreporter):
    """Which broker the suite ran on, and its start-to-ready time."""
    for b in _session_broker:
        ready = f", ready in {b.ready_s:.2f}s from the start of its process" if b.ready_s else ""
        terminalreporter.write_line(f"broker: {b.kind} at {b.bootstrap}{ready}")


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """KAFKA_BOOTSTRAP if set; else testcontainers Kafka if Docker answers; else a local Apache
    Kafka 4.4 on a temporary folder."""
    log_path = Path(tmp_path_factory.mktemp("broker")) / "broker.log"
    b = find_or_start_broker(log_path=log_path)
    _session_broker.append(b)
    yield b
    b.stop()


@pytest.fixture(scope="session", autouse=True)
def private_redis(tmp_path_factory):
    """A private redis-server on a free loopback port for the whole session; every
    FeaturesSettings (and every process a test starts) finds it through
    ``CONVCG_FEATURES_REDIS_CONNECTION``."""
    from convcg.process.redis_server import start_redis

    home = Path(tmp_path_factory.mktemp("redis"))
    server = start_redis(home, log_path=home / "redis.log")
    before = os.environ.get("CONVCG_FEATURES_REDIS_CONNECTION")
    os.environ["CONVCG_FEATURES_REDIS_CONNECTION"] = server.connection
    yield server
    if before is None:
        os.environ.pop("CONVCG_FEATURES_REDIS_CONNECTION", None)
    else:
        os.environ["CONVCG_FEATURES_REDIS_CONNECTION"] = before
    server.stop()


@pytest.fixture
def topics(broker) -> Topics:
    """A fresh set of the project's topics, unique to this test."""
    t = Topics(prefix=f"t{uuid.uuid4().hex[:8]}-")
    create_topics(broker.bootstrap, t.all(), TEST_PARTITIONS)
    return t
