"""The launch rig of the freshness benches: a broker (found or started), fresh topics, a Feast
repo on the chosen online store, a running `convcg features sink` with a metrics port, and any
other component (`worker`, `aggregates`) started beside it on the same topics and store."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

from bench import ROOT
from convcg.contract import Topics
from convcg.kafka.broker import create_topics, find_or_start_broker, free_port
from convcg.kafka.settings import KafkaSettings
from features.online.read import OnlineReader
from features.repo.store import apply_repo, delete_redis_project_keys
from features.settings import FeaturesSettings
from loop.supervisor import Component


class SinkRig:
    def __init__(self, store: str, tmp_prefix: str, extra_env: dict[str, str] | None = None,
                 redis_connection: str | None = None) -> None:
        self.store = store
        self.tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix))
        self.broker = find_or_start_broker(log_path=self.tmp / "broker.log")
        self.topics = Topics(prefix=f"b{uuid.uuid4().hex[:6]}-")
        create_topics(self.broker.bootstrap, self.topics.all(), 3)
        self.settings = FeaturesSettings(repo_dir=self.tmp / "feast", labels_dir=self.tmp / "labels",
                                         project=f"bench{uuid.uuid4().hex[:8]}", online_store=store,
                                         kafka=KafkaSettings(topic_prefix=self.topics.prefix), consumer_group=f"g-{self.topics.prefix}",
                                         **({"redis_connection": redis_connection} if redis_connection else {}))
        self.reader = OnlineReader(apply_repo(self.settings))
        self.metrics_port = free_port()
        s = self.settings
        #: the components' environment on top of this process's
        self.env = {"CONVCG_FEATURES_REPO_DIR": str(s.repo_dir), "CONVCG_FEATURES_LABELS_DIR": str(s.labels_dir),
                    "CONVCG_FEATURES_PROJECT": s.project, "CONVCG_FEATURES_ONLINE_STORE": store,
                    "CONVCG_FEATURES_CONSUMER_GROUP": s.consumer_group,
                    "CONVCG_FEATURES_REDIS_CONNECTION": s.redis_connection, **(extra_env or {})}
        self.components: list[Component] = []
        self.sink = self.start("sink", ["features", "sink", "--bootstrap", self.broker.bootstrap,
                                        "--topic-prefix", self.topics.prefix, "--metrics-port", str(self.metrics_port)])

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Component:
        """`convcg <args>` as its own process with the rig's environment (plus ``env``),
        logging to ``<tmp>/<name>.log``; stopped by ``close()``."""
        component = Component(name, args, {**self.env, **(env or {})}, self.tmp / f"{name}.log", cwd=ROOT,
                              stop_timeout_s=30).start()
        self.components.append(component)
        return component

    def check_alive(self) -> None:
        for c in self.components:
            if not c.alive:
                raise RuntimeError(f"{c.name} exited: {c.tail(40)}")

    def close(self) -> None:
        for c in reversed(self.components):
            c.stop()
        self.broker.stop()
        if self.store == "redis":
            delete_redis_project_keys(self.settings)
