"""Click commands of the streams component: `worker`, `labels` (and `replay`, from replay.py)."""

from __future__ import annotations

import click

try:
    from streams.replay import replay_command  # noqa: F401  (exported to loop.cli)
except ImportError:  # replay not built yet
    pass


@click.command("worker")
@click.option("--bootstrap", envvar="CONVCG_STREAMS_BOOTSTRAP", help="Kafka bootstrap (default from settings)")
@click.option("--topic-prefix", default=None)
@click.option("--app-id", default=None, help="Faust app id = consumer group")
@click.option("--metrics-port", type=int, default=None, help="Prometheus port (0 = off)")
def worker_command(bootstrap, topic_prefix, app_id, metrics_port) -> None:
    """Run the Faust worker: validation and the label join (dead letters, labels)."""
    from streams.settings import StreamSettings
    from streams.worker import run_worker

    overrides = {k: v for k, v in dict(bootstrap=bootstrap, topic_prefix=topic_prefix, app_id=app_id,
                                        metrics_port=metrics_port).items() if v is not None}
    run_worker(StreamSettings(**overrides))


@click.command("aggregates")
@click.option("--bootstrap", envvar="CONVCG_STREAMS_BOOTSTRAP", help="Kafka bootstrap (default from settings)")
@click.option("--topic-prefix", default=None)
@click.option("--metrics-port", type=int, default=None, help="Prometheus port (0 = off)")
def aggregates_command(bootstrap, topic_prefix, metrics_port) -> None:
    """Run the streaming feature aggregates: every event partition -> per user / item /
    advertiser windows -> the feature-updates topic (rebuilt from the log start on each start)."""
    from streams.aggregates_worker import run_aggregates
    from streams.settings import StreamSettings

    overrides = {k: v for k, v in dict(bootstrap=bootstrap, topic_prefix=topic_prefix,
                                        metrics_port=metrics_port).items() if v is not None}
    run_aggregates(StreamSettings(**overrides))


@click.command("labels")
@click.option("--bootstrap", required=True)
@click.option("--topic-prefix", default="")
@click.option("--timeout", type=float, default=10.0)
def labels_command(bootstrap, topic_prefix, timeout) -> None:
    """Print label counts by kind from the labels topic (deduplicated on label_id)."""
    from convcg.contract import Topics
    from convcg.kafka_io import read_topic
    from streams.labels import count_by_kind, dedupe

    raw = read_topic(bootstrap, Topics(topic_prefix).labels, timeout=timeout)
    labels = dedupe(raw)
    click.echo(f"{len(labels)} labels ({len(raw) - len(labels)} redelivered copies dropped)")
    for kind, n in count_by_kind(labels).items():
        click.echo(f"  {kind:<11} {n}")
