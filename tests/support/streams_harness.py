"""Test helpers for running the real streams worker against the real broker."""

from __future__ import annotations

from pathlib import Path

import orjson

from convcg.contract import Conversion, Engagement, Impression, Topics, event_to_dict
from convcg.kafka.io import json_producer
from loop.supervisor import Component
from streams.label_join.rules import LabelRules
from streams.replay.watermarks import closing_watermark, send_watermark

TOPIC_OF = {Impression: "impressions", Engagement: "engagements", Conversion: "conversions"}


def produce_events(bootstrap: str, topics: Topics, events, partitions: int, close: bool = True) -> None:
    p = json_producer(bootstrap)
    for e in events:
        p.send(getattr(topics, TOPIC_OF[type(e)]), key=e.user_id.encode(), value=orjson.dumps(event_to_dict(e)))
    p.flush()
    if close:
        send_watermark(p, topics, partitions, closing_watermark(max(e.ts for e in events), LabelRules()))
    p.close()


def start_worker(bootstrap: str, topics: Topics, app_id: str, log_path: Path, **env_extra) -> Component:
    return start_component(["worker"], bootstrap, topics, log_path, CONVCG_STREAMS_APP_ID=app_id, **env_extra)


def start_component(args: list[str], bootstrap: str, topics: Topics, log_path: Path, **env_extra) -> Component:
    """Any streams command (e.g. ``["aggregates"]``) as its own process on ``topics``; a stop
    waits up to 30 s for a clean shutdown before SIGKILL."""
    env = {"CONVCG_STREAMS_KAFKA__BOOTSTRAP": bootstrap, "CONVCG_STREAMS_KAFKA__TOPIC_PREFIX": topics.prefix,
           **{k: str(v) for k, v in env_extra.items()}}
    return Component(args[0], args, env, log_path, stop_timeout_s=30).start()


def wait_until_members_hold_partitions(bootstrap: str, group: str, members: int, workers, timeout: float = 120.0) -> None:
    """Until ``group`` is stable with ``members`` members, each assigned at least one partition.
    On Apache Kafka the first member to join takes every partition at once, and can finish a
    short log before the next one joins: a test of several members sends its events after this."""
    import time

    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline, seen = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        for w in workers:
            assert w.alive, f"a worker exited with {w.returncode}"
        (future,) = admin.describe_consumer_groups([group]).values()
        try:
            seen = future.result(timeout=10)
        except Exception:  # the group does not exist yet
            time.sleep(0.5)
            continue
        held = [len(m.assignment.topic_partitions) for m in seen.members]
        if seen.state == ConsumerGroupState.STABLE and len(held) == members and all(held):
            return
        time.sleep(0.5)
    raise AssertionError(f"group {group} never had {members} members holding partitions: {seen}")
