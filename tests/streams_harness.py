"""Test helpers for running the real streams worker against the real broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson

from convcg.contract import Conversion, Engagement, Impression, Topics, event_to_dict
from convcg.kafka_io import json_producer
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


def start_worker(bootstrap: str, topics: Topics, app_id: str, log_path: Path, **env_extra) -> subprocess.Popen:
    env = dict(os.environ, CONVCG_STREAMS_BOOTSTRAP=bootstrap, CONVCG_STREAMS_TOPIC_PREFIX=topics.prefix,
               CONVCG_STREAMS_APP_ID=app_id, **{k: str(v) for k, v in env_extra.items()})
    return subprocess.Popen([sys.executable, "-m", "loop.cli", "worker"], env=env,
                            stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen, kill: bool = False) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def start_component(args: list[str], bootstrap: str, topics: Topics, log_path: Path, **env_extra) -> subprocess.Popen:
    """Any streams command (e.g. ``["aggregates"]``) as its own process on ``topics``."""
    env = dict(os.environ, CONVCG_STREAMS_BOOTSTRAP=bootstrap, CONVCG_STREAMS_TOPIC_PREFIX=topics.prefix,
               **{k: str(v) for k, v in env_extra.items()})
    return subprocess.Popen([sys.executable, "-m", "loop.cli", *args], env=env,
                            stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
