"""A local Apache Kafka node: one KRaft process (broker and controller combined) run from the
pinned jars, its data in a folder, sized for a 2-core machine.

    start_local_kafka(data_dir)      # formats the folder the first time, then starts and waits

1. The folder is formatted once (``kafka.tools.StorageTool format --standalone``); a later
   start on the same folder finds ``meta.properties`` and keeps every record the broker
   acknowledged, after a clean stop or a SIGKILL alike.
2. The ports are kept in the folder (``convcg-broker.json``), so a restart answers at the same
   ``bootstrap`` and its controller at the address its quorum was formatted with.
3. Readiness is polled (a metadata answer that lists the broker), never slept; the time from
   the JVM's start to ready is kept on the returned `Broker` and logged.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from convcg.kafka.distribution import LOG_CONFIG, classpath, java_binary

log = logging.getLogger(__name__)

PORTS_FILE = "convcg-broker.json"
NODE_ID = 1


class LocalKafkaSettings(BaseSettings):
    """The embedded broker's sizing (``CONVCG_BROKER_*``). The defaults fit beside the whole
    pipeline on 2 cores: Kafka's own defaults (a 1 GiB heap, 8 IO threads, a 128 MiB cleaner
    buffer, 50 offsets partitions) are for a dedicated server."""

    model_config = SettingsConfigDict(env_prefix="CONVCG_BROKER_", extra="ignore")

    heap_mb: int = Field(512, ge=128, le=512, description="JVM heap (-Xmx), MiB")
    network_threads: int = Field(2, ge=1, description="num.network.threads")
    io_threads: int = Field(2, ge=1, description="num.io.threads")
    background_threads: int = Field(2, ge=1, description="background.threads")
    cleaner_buffer_bytes: int = Field(8 << 20, ge=1 << 20, description="log.cleaner.dedupe.buffer.size (compaction)")
    offsets_partitions: int = Field(8, ge=1, description="offsets.topic.num.partitions (__consumer_offsets)")
    session_timeout_ms: int = Field(3000, ge=1000, description="broker.session.timeout.ms: a node restarted after a "
                                    "SIGKILL registers again only once its dead incarnation's session expired (9 s by default)")
    ready_timeout_s: float = Field(60.0, gt=0, description="longest wait for the broker to answer")


def cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (as
    ``kafka-storage random-uuid`` prints). Like Kafka's ``Uuid.randomUuid``, never one that
    starts with "-": the storage tool's command line would take it for an option."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def server_properties(data_dir: Path, port: int, controller_port: int, s: LocalKafkaSettings) -> str:
    """``server.properties`` of the single combined node."""
    props = {
        "process.roles": "broker,controller",
        "node.id": NODE_ID,
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "log.dirs": data_dir / "log",
        "num.network.threads": s.network_threads,
        "num.io.threads": s.io_threads,
        "background.threads": s.background_threads,
        "num.recovery.threads.per.data.dir": 1,
        "log.cleaner.threads": 1,
        "log.cleaner.dedupe.buffer.size": s.cleaner_buffer_bytes,
        # one node: every internal topic at replication 1
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": s.offsets_partitions,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        # a dev node: no 3 s wait before every first group join
        "group.initial.rebalance.delay.ms": 0,
        "broker.session.timeout.ms": s.session_timeout_ms,
        "broker.heartbeat.interval.ms": max(250, s.session_timeout_ms // 4),
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def _ports(data_dir: Path, port: int | None) -> tuple[int, int, str]:
    """(port, controller port, cluster id): kept from an earlier start on this folder, else new."""
    from convcg.kafka.broker import free_port

    saved_path = data_dir / PORTS_FILE
    saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
    port = port or saved.get("port") or free_port()
    controller = saved.get("controller_port") or free_port()
    while controller == port:
        controller = free_port()
    cluster = saved.get("cluster_id") or cluster_id()
    saved_path.write_text(json.dumps({"port": port, "controller_port": controller, "cluster_id": cluster}))
    return port, controller, cluster


def _jvm(java: str, s: LocalKafkaSettings) -> list[str]:
    return [java, f"-Xmx{s.heap_mb}m", "-Xms64m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG_CONFIG}", "-cp", classpath()]


def format_storage(data_dir: Path, cluster_id: str, java: str, s: LocalKafkaSettings) -> bool:
    """Format the folder unless it already holds a formatted log; True if it formatted it."""
    import subprocess

    if (data_dir / "log" / "meta.properties").exists():
        return False
    done = subprocess.run([*_jvm(java, s), "kafka.tools.StorageTool", "format", "--standalone",
                           "-t", cluster_id, "-c", str(data_dir / "server.properties")],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"formatting {data_dir} failed: {(done.stdout + done.stderr)[-2000:]}")
    return True


def start_local_kafka(data_dir: Path, port: int | None = None, log_path: Path | None = None,
                      settings: LocalKafkaSettings | None = None):
    """Start a KRaft node on ``data_dir`` (created and formatted if new) and wait until it
    answers; returns a `convcg.kafka.broker.Broker` (kind ``apache-kafka``)."""
    from convcg.kafka.broker import Broker, wait_until_ready
    from convcg.process.server_process import start_server_process

    s = settings or LocalKafkaSettings()
    java = java_binary()
    data_dir = Path(data_dir).absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    port, controller_port, cluster_id = _ports(data_dir, port)
    (data_dir / "server.properties").write_text(server_properties(data_dir, port, controller_port, s))
    formatted = format_storage(data_dir, cluster_id, java, s)
    log_path = log_path or data_dir / "broker.log"
    started = time.monotonic()
    proc, stop = start_server_process([*_jvm(java, s), "kafka.Kafka", str(data_dir / "server.properties")], log_path)
    bootstrap = f"127.0.0.1:{port}"
    try:
        wait_until_ready(bootstrap, timeout=s.ready_timeout_s, process=proc)
    except Exception as exc:
        stop()
        tail = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
        raise RuntimeError(f"Apache Kafka did not start on {data_dir}: {exc}\n{tail}") from exc
    ready_s = time.monotonic() - started
    log.info("Apache Kafka at %s ready in %.2fs (data %s%s, pid %d)", bootstrap, ready_s, data_dir,
             ", formatted now" if formatted else "", proc.pid)
    return Broker(bootstrap=bootstrap, kind="apache-kafka", data_dir=data_dir, ready_s=ready_s,
                  _stop=stop, process=proc)
