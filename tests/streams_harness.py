"""Test helpers for running the real streams worker against the real broker."""

from __future__ import annotations

from pathlib import Path

import orjson

from convcg.contract import Conversion, Engagement, Impression, Topics, event_to_dict
from convcg.kafka_io import json_producer
from loop.supervisor import Component
from streams.control import closing_watermark, send_watermark
from streams.label_rules import LabelRules

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
