"""Replay an event log into the event topics in event-time order: `convcg replay`.

Every event goes to its type's topic (impressions / engagements / conversions), keyed by
``user_id`` so a user's events share a partition number across topics, JSON via orjson.
``speed`` paces by event time: X seconds of event time per wall-clock second (0 = as fast as
the broker takes them). Producing in one global event-time order from one producer keeps
every partition in event-time order too.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import click
import orjson
from prometheus_client import Counter
from pydantic_settings import BaseSettings, SettingsConfigDict

from convcg.contract import Conversion, Engagement, Topics, event_to_dict

log = logging.getLogger("convcg.replay")

REPLAYED = Counter("convcg_replay_events_total", "Events produced by replay, by event type", ["type"])

#: sleeping less than this is not worth a flush + sleep; the lag is caught up on the next event
MIN_SLEEP_SECONDS = 0.005


class ReplaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVCG_REPLAY_")

    partitions: int = 3
    topic_prefix: str = ""
    catalog_out: Path = Path("var/catalog/items.parquet")
    linger_ms: int = 20
    batch_bytes: int = 512 * 1024
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
           progress: bool = True, settings: ReplaySettings | None = None) -> dict[str, int]:
    """Produce ``log_``'s events (the first ``limit``) in event-time order; return counts by type.

    ``log_`` is a ``streams.datasets.EventLog``. Topics must exist (see ``create_topics``).
    """
    from tqdm import tqdm

    from convcg.kafka_io import json_producer

    s = settings or ReplaySettings()
    events = log_.events if limit is None else log_.events[:limit]
    counts = {"impression": 0, "engagement": 0, "conversion": 0}
    if not events:
        return counts
    producer = json_producer(bootstrap, linger_ms=s.linger_ms, batch_size=s.batch_bytes)
    first_ts, wall_start = events[0].ts, time.monotonic()
    dumps = orjson.dumps
    try:
        with tqdm(total=len(events), unit="ev", desc=f"replay {log_.name}", disable=not progress,
                  mininterval=s.progress_interval_seconds, smoothing=0.1) as bar:
            for n, event in enumerate(events, 1):
                if speed > 0:
                    wait = seconds_until_due(event.ts, first_ts, wall_start, time.monotonic(), speed)
                    if wait > MIN_SLEEP_SECONDS:
                        producer.flush()
                        bar.update(n - 1 - bar.n)
                        time.sleep(wait)
                topic, kind = topic_for(event, topics)
                producer.send(topic, key=event.user_id.encode(), value=dumps(event_to_dict(event)))
                counts[kind] += 1
                if n & 1023 == 0:
                    bar.update(n - bar.n)
            producer.flush()
            bar.update(len(events) - bar.n)
    finally:
        producer.close()
    for kind, k in counts.items():
        REPLAYED.labels(kind).inc(k)
    elapsed = time.monotonic() - wall_start
    log.info("replayed %d events of %s in %.1fs (%.0f ev/s): %s", len(events), log_.name, elapsed,
             len(events) / max(elapsed, 1e-9), counts)
    return counts


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


def resolve_bootstrap(bootstrap: str | None) -> str:
    if bootstrap:
        return bootstrap
    if os.environ.get("KAFKA_BOOTSTRAP"):
        from convcg.broker import find_or_start_broker

        return find_or_start_broker().bootstrap
    raise click.UsageError("no broker given: pass --bootstrap HOST:PORT (or set KAFKA_BOOTSTRAP), "
                           "or start a local one with `convcg broker`")


@click.command("replay")
@click.argument("source")
@click.option("--speed", type=float, default=0.0, show_default=True,
              help="Seconds of event time per wall-clock second; 0 = as fast as possible.")
@click.option("--limit", type=int, default=None, help="Replay only the first N events.")
@click.option("--bootstrap", default=None, help="Kafka bootstrap HOST:PORT (default: $KAFKA_BOOTSTRAP).")
@click.option("--topic-prefix", default=None, help="Prefix of every topic name.")
@click.option("--partitions", type=int, default=None, help="Partitions of topics created here.")
@click.option("--catalog-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the item catalog (parquet, for Feast).")
@click.option("--seed", type=int, default=None, help="Seed of a generated dataset.")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Loader option, e.g. -o n_impressions=1000000 for `synthetic`.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def replay_command(source: str, speed: float, limit: int | None, bootstrap: str | None,
                   topic_prefix: str | None, partitions: int | None, catalog_out: Path | None,
                   seed: int | None, options: tuple[str, ...], no_progress: bool) -> None:
    """Replay SOURCE (movielens-100k | open-bandit | synthetic | a JSONL file) into the topics."""
    from convcg.broker import create_topics
    from streams.datasets import load_log

    s = ReplaySettings()
    if speed < 0:
        raise click.BadParameter("must be >= 0", param_hint="--speed")
    bootstrap = resolve_bootstrap(bootstrap)
    loader_options = dict(parse_option(o) for o in options)
    if seed is not None:
        loader_options["seed"] = seed
    try:
        event_log = load_log(source, **loader_options)
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(str(exc), param_hint="SOURCE") from None
    topics = Topics(s.topic_prefix if topic_prefix is None else topic_prefix)
    created = create_topics(bootstrap, topics.all(), partitions or s.partitions)
    if created:
        log.info("created topics %s", ", ".join(created))
    catalog_path = write_catalog(event_log, catalog_out or s.catalog_out)
    counts = replay(event_log, bootstrap, topics, speed=speed, limit=limit, progress=not no_progress,
                    settings=s)
    click.echo(f"replayed {sum(counts.values())} events from {event_log.name} to {bootstrap}: "
               + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"; catalog -> {catalog_path}")
