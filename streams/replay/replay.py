"""Replay an event log into the event topics in event-time order: `convcg replay`.

Every event goes to its type's topic (impressions / engagements / conversions), keyed by
``user_id`` so a user's events share a partition number across topics, JSON via orjson.
``speed`` paces by event time: X seconds of event time per wall-clock second (0 = as fast as
the broker takes them). Producing in one global event-time order from one idempotent producer
(``acks=all``) keeps every partition in event-time order too, across retries: the broker
refuses a batch out of sequence, so a retried batch cannot land behind a later one or twice.
Partitioning is aiokafka's default (murmur2 of the key, as Java Kafka and kafka-python), so
consumers in any of those clients see the same user -> partition mapping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from pathlib import Path

import click
import orjson
from prometheus_client import Counter
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from convcg.cli_options import bootstrap_option, topic_prefix_option
from convcg.contract import Conversion, Engagement, Topics, event_to_dict
from convcg.kafka.settings import KafkaSettings

log = logging.getLogger(__name__)

REPLAYED = Counter("convcg_replay_events_total", "Events produced by replay, by event type", ["type"])

#: sleeping less than this is not worth a flush + sleep; the lag is caught up on the next event
MIN_SLEEP_SECONDS = 0.005
#: how long `convcg replay` waits for the broker to answer before saying how to give one
BROKER_CHECK_S = 5.0


class ReplaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVCG_REPLAY_", env_nested_delimiter="__")

    partitions: int = 3
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    catalog_out: Path = Path("var/catalog/items.parquet")
    linger_ms: int = 5
    batch_bytes: int = 512 * 1024
    max_in_flight: int = 10_000  # sends awaited in chunks of this size
    progress_interval_seconds: float = 0.5


def seconds_until_due(ts: float, first_ts: float, wall_start: float, now: float, speed: float) -> float:
    """How long to wait before sending an event at event time ``ts`` (<= 0: send now).

    At ``speed`` X, event time advances X seconds per wall second from (first_ts, wall_start).
    """
    if speed <= 0:
        return 0.0
    return wall_start + (ts - first_ts) / speed - now


def topic_for(event, topics: Topics) -> tuple[str, str]:
    """(topic name, event type) of an event."""
    if isinstance(event, Engagement):
        return topics.engagements, "engagement"
    if isinstance(event, Conversion):
        return topics.conversions, "conversion"
    return topics.impressions, "impression"


def replay(log_, bootstrap: str, topics: Topics, speed: float = 0.0, limit: int | None = None,
           progress: bool = True, settings: ReplaySettings | None = None, close: bool = False) -> dict[str, int]:
    """Produce ``log_``'s events (the first ``limit``) in event-time order; return counts by type.

    ``log_`` is a ``streams.replay.datasets.EventLog``; the topics must exist (``create_topics``).
    ``close``: end with a producer watermark past every label window (``streams.replay.watermarks``) on
    every partition of the event topics, so the label join decides everything pending.
    Blocking; from inside a running event loop use ``replay_async``.
    """
    return asyncio.run(replay_async(log_, bootstrap, topics, speed, limit, progress, settings, close))


async def replay_async(log_, bootstrap: str, topics: Topics, speed: float = 0.0, limit: int | None = None,
                       progress: bool = True, settings: ReplaySettings | None = None,
                       close: bool = False) -> dict[str, int]:
    """``replay`` on the caller's event loop (aiokafka producer: ~3x kafka-python's rate here)."""
    from aiokafka import AIOKafkaProducer
    from tqdm import tqdm

    s = settings or ReplaySettings()
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    events = log_.events if limit is None else log_.events[:limit]
    counts = {"impression": 0, "engagement": 0, "conversion": 0}
    if not events:
        return counts
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=s.linger_ms,
                                max_batch_size=s.batch_bytes, acks="all", enable_idempotence=True)
    await producer.start()
    first_ts, wall_start = events[0].ts, time.monotonic()
    dumps = orjson.dumps
    in_flight: deque = deque()
    try:
        with tqdm(total=len(events), unit="ev", desc=f"replay {log_.name}", disable=not progress,
                  mininterval=s.progress_interval_seconds, smoothing=0.1) as bar:
            for n, event in enumerate(events, 1):
                if speed > 0:
                    wait = seconds_until_due(event.ts, first_ts, wall_start, time.monotonic(), speed)
                    if wait > MIN_SLEEP_SECONDS:
                        bar.update(n - 1 - bar.n)
                        await asyncio.sleep(wait)
                topic, kind = topic_for(event, topics)
                in_flight.append(await producer.send(topic, key=event.user_id.encode(),
                                                     value=dumps(event_to_dict(event))))
                counts[kind] += 1
                if len(in_flight) >= 2 * s.max_in_flight:  # bound memory; surfaces send errors
                    await asyncio.gather(*(in_flight.popleft() for _ in range(s.max_in_flight)))
                if n & 1023 == 0:
                    bar.update(n - bar.n)
            await asyncio.gather(*in_flight)
            bar.update(len(events) - bar.n)
        if close:
            await _send_closing_watermark(producer, topics, events[-1].ts)
    finally:
        await producer.stop()
    for kind, k in counts.items():
        REPLAYED.labels(kind).inc(k)
    elapsed = time.monotonic() - wall_start
    log.info("replayed %d events of %s in %.1fs (%.0f ev/s): %s", len(events), log_.name, elapsed,
             len(events) / max(elapsed, 1e-9), counts)
    return counts


async def _send_closing_watermark(producer, topics: Topics, last_event_ts: float) -> float:
    """A ``{"watermark": ts}`` record on every partition of the three event topics, with ts past
    every label window after the last event (rules from the streams settings / env), marked as
    a trusted close (`streams.replay.watermarks.CLOSE_HEADERS`)."""
    from streams.replay.watermarks import CLOSE_HEADERS, closing_watermark
    from streams.settings import StreamSettings

    ts = closing_watermark(last_event_ts, StreamSettings().rules)
    body = orjson.dumps({"watermark": ts})
    sends = []
    for topic in topics.events:
        for partition in sorted(await producer.partitions_for(topic)):
            sends.append(await producer.send(topic, value=body, partition=partition, headers=CLOSE_HEADERS))
    await asyncio.gather(*sends)
    log.info("closed the replay with a producer watermark at %.0f on %d partitions", ts, len(sends))
    return ts


def write_catalog(log_, path: str | Path) -> Path:
    """Write the item catalog as parquet with an ``event_timestamp`` column (the log's first
    event time, UTC) so Feast can join it point-in-time."""
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    catalog = log_.catalog.copy()
    first_ts = log_.events[0].ts if log_.events else time.time()
    catalog["event_timestamp"] = pd.Timestamp(first_ts, unit="s", tz="UTC")
    catalog.to_parquet(path, index=False)
    return path


def parse_option(text: str) -> tuple[str, object]:
    """``key=value`` -> (key, int | float | str value)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"expected KEY=VALUE, got {text!r}")
    for cast in (int, float):
        try:
            return key.replace("-", "_"), cast(raw)
        except ValueError:
            pass
    return key.replace("-", "_"), raw


@click.command("replay")
@click.argument("source")
@click.option("--speed", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
              help="Pace, in event-seconds per wall-clock second (60 = an event-time minute each second); "
                   "0 = as fast as possible.")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Replay only the first N events.")
@bootstrap_option("CONVCG_REPLAY_")
@topic_prefix_option("CONVCG_REPLAY_")
@click.option("--partitions", type=click.IntRange(min=1), default=None, help="Partitions of topics created here.")
@click.option("--catalog-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the item catalog (parquet, for Feast).")
@click.option("--seed", type=int, default=None, help="Seed of a generated dataset.")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Loader option, e.g. -o n_impressions=1000000 for `synthetic`.")
@click.option("--close", is_flag=True,
              help="End with a producer watermark past every label window, so the worker decides "
                   "every pending label (negatives, late conversions).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def replay_command(source: str, speed: float, limit: int | None, bootstrap: str | None,
                   topic_prefix: str | None, partitions: int | None, catalog_out: Path | None,
                   seed: int | None, options: tuple[str, ...], close: bool, no_progress: bool) -> None:
    """Replay SOURCE (movielens-100k | open-bandit | synthetic | a JSONL file) into the topics."""
    from convcg.kafka.broker import create_topics, wait_until_ready
    from streams.replay.datasets import load_log
    from streams.replay.datasets.wheels import WheelFetchError

    s = ReplaySettings()
    kafka = s.kafka.with_overrides(bootstrap, topic_prefix)
    bootstrap = kafka.bootstrap
    try:
        wait_until_ready(bootstrap, timeout=BROKER_CHECK_S)
    except TimeoutError:
        raise click.UsageError(f"no broker answers at {bootstrap}: pass --bootstrap HOST:PORT (or set "
                               "KAFKA_BOOTSTRAP), or start a local one with `convcg broker`") from None
    loader_options = dict(parse_option(o) for o in options)
    if seed is not None:
        loader_options["seed"] = seed
    try:
        event_log = load_log(source, **loader_options)
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(str(exc), param_hint="SOURCE") from None
    except WheelFetchError as exc:
        raise click.ClickException(f"could not fetch the data for {source}: {exc}") from None
    topics = kafka.topics
    created = create_topics(bootstrap, topics.all(), partitions or s.partitions)
    if created:
        log.info("created topics %s", ", ".join(created))
    catalog_path = write_catalog(event_log, catalog_out or s.catalog_out)
    counts = replay(event_log, bootstrap, topics, speed=speed, limit=limit, progress=not no_progress,
                    settings=s, close=close)
    click.echo(f"replayed {sum(counts.values())} events from {event_log.name} to {bootstrap}: "
               + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"; catalog -> {catalog_path}")
