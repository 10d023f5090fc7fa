"""`convcg watermarks show|reset`: the operator's view of each join partition's watermark, as
the label join's changelog holds it (`streams.label_join.state`), and the way to reset one that
went wrong (e.g. moved far ahead by a record before watermarks were bounded).

A reset writes the partition's watermark entry to the changelog; the worker reads it when it
restores the partition. A running worker holds the partition's watermark in memory and would
overwrite the entry at its next batch, so a reset is refused while the worker's consumer group
has members (stop the workers first). A reset moves future decisions only: labels already sent
and impressions already forgotten stay as they are.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import orjson

from streams.label_join.state import STATE_TABLE, WATERMARK_KEY, restore_entries


@dataclass(frozen=True)
class PartitionView:
    partition: int
    watermark: float
    pending: int


def changelog_topic(app_id: str) -> str:
    """The join state's changelog (Faust's name for the changelog of table `STATE_TABLE`)."""
    return f"{app_id}-{STATE_TABLE}-changelog"


def show(bootstrap: str, app_id: str, timeout_s: float = 120.0) -> list[PartitionView]:
    """Every partition's watermark and pending impressions, as a restore would see them."""
    from convcg.kafka.broker import topic_partitions
    from streams.kafka.changelog_read import read_partition

    topic = changelog_topic(app_id)
    counts = topic_partitions(bootstrap, [topic])
    if topic not in counts:
        raise LookupError(f"no changelog {topic}: is {app_id!r} the worker's app id (CONVCG_STREAMS_APP_ID)?")
    out = []
    for p in range(counts[topic]):
        states, wm = restore_entries(p, read_partition(bootstrap, topic, p, timeout_s))
        out.append(PartitionView(p, wm, len(states)))
    return out


def active_members(bootstrap: str, group: str, timeout_s: float = 30.0) -> int:
    """Members of ``group`` now (0 when it is empty or unknown: the broker describes an unknown
    group as dead, without members). An error of the call raises: a reset is not done blind."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the answer is in
    deadline = time.monotonic() + timeout_s
    while True:
        (future,) = admin.describe_consumer_groups([group]).values()
        try:
            return len(future.result(timeout=10).members)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() == KafkaError.GROUP_ID_NOT_FOUND:
                return 0
            transient = err.retriable() or err.code() in (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
                                                          KafkaError.COORDINATOR_LOAD_IN_PROGRESS)
            if not transient or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def check_reset(ts: float, now: float, max_future_s: float, force: bool) -> None:
    """A reset's target must be a time a watermark may hold (`convcg.validation`'s bounds)."""
    if not math.isfinite(ts) or ts <= 0:
        raise ValueError(f"--to must be a finite Unix time in seconds, got {ts}")
    if ts > now + max_future_s and not force:
        raise ValueError(f"--to {ts} is more than {max_future_s:.0f}s ahead of now (pass --force to mean it)")


def reset(bootstrap: str, app_id: str, partition: int, ts: float) -> None:
    """Write partition ``partition``'s watermark entry (the last value of its key wins)."""
    from convcg.kafka.io import json_producer

    p = json_producer(bootstrap)
    p.send(changelog_topic(app_id), orjson.dumps({"p": partition, "wm": ts}), orjson.dumps(WATERMARK_KEY % partition),
           partition=partition)
    p.close()


def describe(view: PartitionView) -> str:
    wm = view.watermark
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wm)) if math.isfinite(wm) and 0 < wm < 253402300800 else "-"
    return f"partition {view.partition}: watermark {wm!r} ({when}), {view.pending} pending impressions"
