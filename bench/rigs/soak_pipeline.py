"""The soak's pipeline (`bench/reliability/soak.py`): every component as its own process, started as
`convcg up` starts them (`loop/up.py`), on a broker and a private online store; and the reads
the soak judges it by: consumer-group lag (has everything been consumed?) and the online
feature values the sink wrote."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.rigs.soak_checks import Features
from convcg.contract import ENTITIES, Topics
from convcg.kafka.broker import free_port
from convcg.kafka.io import read_topic
from features.online.read import OnlineReader
from features.repo.definitions import stream_view_name
from features.repo.store import apply_repo
from features.settings import FeaturesSettings
from loop.supervisor import Component

#: the consumer groups the soak waits on (set explicitly, not derived from the components' defaults)
AGGREGATES_GROUP = "soak-aggregates"
SINK_GROUP = "soak-features-sink"
#: feature ids read from the online store per call
READ_BATCH = 1000


@dataclass
class SoakPipeline:
    home: Path
    bootstrap: str
    topics: Topics
    catalog: Path
    online_env: dict[str, str]
    aggregates_workers: int = 2
    parts: dict[str, Component] = field(default_factory=dict)
    retrieval_port: int = 0

    def __post_init__(self) -> None:
        home, logs, registry = self.home, self.home / "logs", self.home / "registry"
        ports = {n: free_port() for n in ("worker", "sink", "trainer", "retrieval")}
        self.retrieval_port = ports["retrieval"]
        index_env = {"CONVCG_INDEX_REGISTRY_ROOT": str(registry), "CONVCG_INDEX_CATALOG_PATH": str(self.catalog),
                     "CONVCG_INDEX_INDEX_ROOT": str(registry / "indexes"),
                     "CONVCG_INDEX_NEW_ITEMS_PATH": str(home / "new_items.parquet"),
                     "CONVCG_INDEX_RETRIEVAL_URL": f"http://127.0.0.1:{ports['retrieval']}",
                     "CONVCG_INDEX_POLL_INTERVAL_S": "2"}
        streams_env = {"CONVCG_STREAMS_KAFKA__BOOTSTRAP": self.bootstrap,
                       "CONVCG_STREAMS_AGGREGATES_GROUP": AGGREGATES_GROUP}
        self.features = FeaturesSettings(
            repo_dir=home / "feast", catalog_path=self.catalog, labels_dir=home / "sink-labels",
            consumer_group=SINK_GROUP, online_store=self.online_env["CONVCG_FEATURES_ONLINE_STORE"],
            **({"redis_connection": self.online_env["CONVCG_FEATURES_REDIS_CONNECTION"]}
               if "CONVCG_FEATURES_REDIS_CONNECTION" in self.online_env else {}))
        features_env = {**self.online_env, "CONVCG_FEATURES_REPO_DIR": str(self.features.repo_dir),
                        "CONVCG_FEATURES_CATALOG_PATH": str(self.catalog),
                        "CONVCG_FEATURES_LABELS_DIR": str(self.features.labels_dir),
                        "CONVCG_FEATURES_CONSUMER_GROUP": SINK_GROUP}

        def add(name: str, args: list[str], env: dict[str, str], port: int = 0) -> None:
            self.parts[name] = Component(name, args, env, logs / f"{name}.log", port)

        add("worker", ["worker", "--metrics-port", str(ports["worker"])], streams_env, ports["worker"])
        for k in range(1, self.aggregates_workers + 1):
            port = free_port()
            add(f"aggregates-{k}", ["aggregates", "--metrics-port", str(port)], streams_env, port)
        add("sink", ["features", "sink", "--bootstrap", self.bootstrap, "--metrics-port", str(ports["sink"])],
            features_env, ports["sink"])
        add("trainer", ["trainer", "--bootstrap", self.bootstrap, "--registry", str(registry),
                        "--trigger-labels", "10000", "--trigger-seconds", "15",
                        "--metrics-port", str(ports["trainer"])],
            {"CONVCG_TRAINING_CATALOG_PATH": str(self.catalog), "CONVCG_TRAINING_LABEL_STORE": str(home / "labels")},
            ports["trainer"])
        add("retrieval", ["retrieval", "serve", "--port", str(ports["retrieval"])], index_env, ports["retrieval"])
        add("refresher", ["refresher", "--bootstrap", self.bootstrap], index_env)

    def start(self) -> OnlineReader:
        """Apply the Feast repo (as `convcg features apply`), start every component; the reader
        of the online store the sink writes."""
        reader = OnlineReader(apply_repo(self.features))
        for c in self.parts.values():
            c.start()
        return reader

    def stop(self) -> None:
        for c in reversed(list(self.parts.values())):
            c.stop()

    @property
    def aggregates_inputs(self) -> list[str]:
        return [*self.topics.events, self.topics.aggregates_by_item, self.topics.aggregates_by_advertiser]


def end_offsets(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """The end offset (high watermark) of every partition of ``topics``."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "soak-end-reader", "enable.auto.commit": False})
    try:
        metadata = c.list_topics(timeout=10).topics
        return {(t, p): c.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
                for t in topics for p in sorted(metadata[t].partitions)}
    finally:
        c.close()


def committed_offsets(bootstrap: str, group: str, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """What ``group`` committed on each partition (0 where it never committed)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        got = c.committed([TopicPartition(t, p) for t, p in partitions], timeout=10)
        return {(tp.topic, tp.partition): max(tp.offset, 0) for tp in got}
    finally:
        c.close()


def group_lag(bootstrap: str, group: str, topics: list[str]) -> tuple[int, int]:
    """(records of ``topics`` past the offsets ``group`` committed, records in ``topics``)."""
    ends = end_offsets(bootstrap, topics)
    committed = committed_offsets(bootstrap, group, list(ends))
    return sum(max(0, end - committed[tp]) for tp, end in ends.items()), sum(ends.values())


class DrainWatch:
    """Whether the aggregates and the sink have consumed everything: both groups have committed
    the end of their inputs and no feature update has been written for ``quiet_s`` (a worker
    that restored its state sends its entities once more when it goes live)."""

    def __init__(self, pipeline: SoakPipeline, quiet_s: float = 10.0) -> None:
        self.p, self.quiet_s = pipeline, quiet_s
        self.end, self.end_since = -1, time.monotonic()
        self.last = ""

    def __call__(self) -> bool:
        p = self.p
        agg, _ = group_lag(p.bootstrap, AGGREGATES_GROUP, p.aggregates_inputs)
        sink, end = group_lag(p.bootstrap, SINK_GROUP, [p.topics.feature_updates])
        if end != self.end:
            self.end, self.end_since = end, time.monotonic()
        dead = [n for n, c in p.parts.items() if not c.alive]
        self.last = f"aggregates lag {agg}, sink lag {sink}, {end} feature updates, dead {dead}"
        return not dead and agg == 0 and sink == 0 and time.monotonic() - self.end_since >= self.quiet_s


def online_ids(log) -> dict[str, list[str]]:
    """Every user, item and advertiser id the log or its catalog names: the ids looked up."""
    ids = {e: set() for e in ENTITIES}
    for ev in log.events:
        ids["user"].add(ev.user_id)
        ids["item"].add(ev.item_id)
        if getattr(ev, "advertiser_id", ""):
            ids["advertiser"].add(ev.advertiser_id)
    ids["item"].update(log.catalog["item_id"])
    ids["advertiser"].update(log.catalog["advertiser_id"])
    return {e: sorted(v) for e, v in ids.items()}


def read_online_features(reader: OnlineReader, ids: dict[str, list[str]]) -> Features:
    """The stored values of every id in ``ids`` that the online store holds."""
    out: Features = {}
    for entity, entity_ids in ids.items():
        for i in range(0, len(entity_ids), READ_BATCH):
            for row in reader.read(stream_view_name(entity), entity_ids[i:i + READ_BATCH]):
                if row["event_ts"] is not None:
                    out[(entity, row["entity_id"])] = (row["event_ts"], row["features"])
    return out


def dead_letter_reasons(bootstrap: str, topics: Topics) -> Counter:
    """Dead letters by (component, reason): a dropped event explains a changed label."""
    return Counter((d["component"], d["reason"]) for d in read_topic(bootstrap, topics.dead_letters, timeout=10))


def sent_updates(bootstrap: str, topics: Topics, keys: set[tuple[str, str]]) -> dict[tuple[str, str], list[dict]]:
    """Every feature update the aggregates sent for ``keys``, in topic order: whether a stale
    online value was never sent or was overwritten."""
    out: dict[tuple[str, str], list[dict]] = {k: [] for k in keys}
    for u in read_topic(bootstrap, topics.feature_updates, timeout=30):
        key = (u["entity"], u["entity_id"])
        if key in out:
            out[key].append(u)
    return out
