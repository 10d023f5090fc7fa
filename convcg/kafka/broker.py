"""Broker harness: find or start a real Apache Kafka broker.

Order of preference (the same for the CLI, `convcg up`, the benches and the test fixture):
1. ``KAFKA_BOOTSTRAP`` if set (an external cluster, e.g. docker-compose's Kafka);
2. testcontainers' Kafka when a Docker engine answers;
3. a local Apache Kafka 4.4 node (`convcg.kafka.local`) on a free loopback port, its data in
   ``data_dir`` (durable across restarts), or in a temporary folder removed when it stops.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)


@dataclass
class Broker:
    """A running (or external) broker. ``stop()`` is idempotent."""

    bootstrap: str
    kind: str  # external | testcontainers | apache-kafka
    data_dir: Path | None = None
    ready_s: float | None = None  # start to ready (a broker this harness started)
    _stop: Callable[[], None] | None = field(default=None, repr=False)
    process: subprocess.Popen | None = field(default=None, repr=False)

    def stop(self) -> None:
        if self._stop is not None:
            stop, self._stop = self._stop, None
            stop()

    def __enter__(self) -> "Broker":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docker_engine_answers(timeout: float = 2.0) -> bool:
    if shutil.which("docker") is None and not os.environ.get("DOCKER_HOST"):
        return False
    try:
        import docker  # type: ignore

        client = docker.from_env(timeout=timeout)
        return bool(client.ping())
    except Exception:
        return False


def wait_until_ready(bootstrap: str, timeout: float = 30.0,
                     process: subprocess.Popen | None = None) -> None:
    """Wait until the broker answers a metadata request that lists a broker (fail fast if its
    process died)."""
    from confluent_kafka.admin import AdminClient

    host, port = bootstrap.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"broker process exited with code {process.returncode}")
        try:  # cheap TCP probe first, so the client does not spin on a closed port
            socket.create_connection((host, int(port)), timeout=1).close()
        except OSError as exc:
            last = exc
            time.sleep(0.1)
            continue
        try:
            if AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=3).brokers:
                return
            last = RuntimeError("no broker registered yet")
        except Exception as exc:  # not up yet
            last = exc
            time.sleep(0.2)
    raise TimeoutError(f"broker at {bootstrap} did not become ready in {timeout}s: {last}")


def start_testcontainers_kafka() -> Broker:
    from testcontainers.kafka import KafkaContainer

    container = KafkaContainer().with_kraft()
    container.start()
    bootstrap = container.get_bootstrap_server()
    wait_until_ready(bootstrap, timeout=60)
    return Broker(bootstrap=bootstrap, kind="testcontainers", _stop=container.stop)


def find_or_start_broker(data_dir: Path | None = None, log_path: Path | None = None,
                         port: int | None = None) -> Broker:
    """KAFKA_BOOTSTRAP if set; else testcontainers' Kafka if Docker answers; else a local
    Apache Kafka on ``data_dir`` (a temporary folder, removed on stop, when None)."""
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        wait_until_ready(external)
        return Broker(bootstrap=external, kind="external")
    if docker_engine_answers():
        try:
            return start_testcontainers_kafka()
        except Exception as exc:  # pragma: no cover - depends on the machine
            log.warning("testcontainers Kafka failed (%s); starting a local Apache Kafka", exc)
    from convcg.kafka.local import start_local_kafka

    if data_dir is not None:
        return start_local_kafka(data_dir, port=port, log_path=log_path)
    scratch = Path(tempfile.mkdtemp(prefix="convcg-kafka-"))
    broker = start_local_kafka(scratch, port=port, log_path=log_path)
    stop = broker._stop

    def stop_and_remove() -> None:
        stop()
        shutil.rmtree(scratch, ignore_errors=True)

    broker._stop = stop_and_remove
    return broker


class TopicSettings(BaseSettings):
    """How `create_topics` configures the project's topics (``CONVCG_TOPICS_*``)."""

    model_config = SettingsConfigDict(env_prefix="CONVCG_TOPICS_", extra="ignore")

    retention_ms: int = Field(7 * 24 * 3600 * 1000, ge=-1, description="retention.ms of the event, label and "
                              "other append-only topics (-1: keep forever)")
    retention_bytes: int = Field(1 << 30, ge=-1, description="retention.bytes per partition of those topics")
    changelog_segment_bytes: int = Field(16 << 20, ge=1 << 20, description="segment.bytes of compacted changelogs "
                                         "(compaction cleans only closed segments)")

    def config_of(self, name: str) -> dict[str, str]:
        from convcg.contract import COMPACTED_SUFFIX

        if name.endswith(COMPACTED_SUFFIX):
            return {"cleanup.policy": "compact", "segment.bytes": str(self.changelog_segment_bytes)}
        return {"cleanup.policy": "delete", "retention.ms": str(self.retention_ms),
                "retention.bytes": str(self.retention_bytes)}


def create_topics(bootstrap: str, names: Iterable[str], partitions: int, replication: int = 1) -> list[str]:
    """Create topics explicitly (idempotent): those named ``*-changelog`` compacted, the rest
    with a retention (`TopicSettings`). Returns once every partition of ``names`` has a leader
    (a new topic's leaders reach the brokers' metadata a moment after CreateTopics answers);
    returns the names that were newly created."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    settings = TopicSettings()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=30).topics)
    wanted = [n for n in dict.fromkeys(names) if n not in existing]
    if not wanted:
        return []
    futures = admin.create_topics([NewTopic(n, partitions, replication, config=settings.config_of(n))
                                   for n in wanted], operation_timeout=30)
    for name, future in futures.items():
        try:
            future.result(timeout=60)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    deadline = time.monotonic() + 60
    while True:
        metadata = admin.list_topics(timeout=30).topics
        leaderless = [f"{n}[{p}]" for n in wanted for p, part in
                      (metadata[n].partitions.items() if n in metadata else [(-1, None)])
                      if part is None or part.leader < 0]
        if not leaderless:
            return wanted
        if time.monotonic() > deadline:
            raise TimeoutError(f"no leader after 60 s for {', '.join(leaderless[:5])}")
        time.sleep(0.05)


def topic_partitions(bootstrap: str, names: Iterable[str], timeout_s: float = 30.0) -> dict[str, int]:
    """Partition count of each existing topic among ``names``."""
    from confluent_kafka.admin import AdminClient

    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=timeout_s)
    return {n: len(metadata.topics[n].partitions) for n in names
            if n in metadata.topics and metadata.topics[n].error is None}


def topic_configs(bootstrap: str, topic: str, timeout_s: float = 30.0) -> dict[str, str]:
    """The broker's configuration of one topic (``cleanup.policy``, ``retention.ms``, ...)."""
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient({"bootstrap.servers": bootstrap})  # held until the answer: its handle serves the future
    (future,) = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)]).values()
    return {name: entry.value for name, entry in future.result(timeout=timeout_s).items()}
