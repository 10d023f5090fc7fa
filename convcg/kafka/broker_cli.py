"""`convcg broker`: run the local Apache Kafka node in the foreground (or use KAFKA_BOOTSTRAP's)
and create the project's topics."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import click

from convcg.contract import Topics
from convcg.kafka.broker import create_topics, find_or_start_broker


@click.command("broker")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("var/kafka/broker"),
              show_default=True, help="The broker's data folder: created and formatted the first time, reused "
                                      "(every acknowledged record kept) after that.")
@click.option("--port", type=int, default=None,
              help="Loopback port to listen on [default: the folder's earlier port, else a free one].")
@click.option("--partitions", type=int, default=3, show_default=True, help="Partitions of each topic it creates.")
@click.option("--topic-prefix", default="", help="Prefix for every topic name.")
def broker(data_dir: Path, port: int | None, partitions: int, topic_prefix: str) -> None:
    """Run a local Apache Kafka 4.4 node until SIGTERM or Ctrl-C (with KAFKA_BOOTSTRAP set: use
    that broker and only create the topics). Prints one line, ``bootstrap=HOST:PORT``, once the
    broker answers."""
    b = find_or_start_broker(data_dir=data_dir, port=port)
    created = create_topics(b.bootstrap, Topics(topic_prefix).all(), partitions)
    click.echo(f"bootstrap={b.bootstrap}")
    sys.stdout.flush()
    click.echo(f"{b.kind} broker" + (f" on {b.data_dir}, ready in {b.ready_s:.2f}s" if b.data_dir else "")
               + f"; created topics: {', '.join(created) or 'none (all existed)'}", err=True)
    if b.kind == "external":
        return
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            if b.process is not None and b.process.poll() is not None:
                raise click.ClickException(f"the broker exited with code {b.process.returncode}")
    finally:
        b.stop()
        click.echo("broker stopped", err=True)
