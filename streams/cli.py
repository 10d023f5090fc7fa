"""Click commands of the streams component: `worker` (the label join), `aggregates` (the
streaming feature aggregates), `labels` (and `replay`, from replay.py)."""

from __future__ import annotations

import click

from streams.replay.replay import replay_command  # noqa: F401  (exported to loop.cli)


@click.command("worker")
@click.option("--bootstrap", default=None, help="Kafka bootstrap (default: CONVCG_STREAMS_KAFKA__BOOTSTRAP, KAFKA_BOOTSTRAP)")
@click.option("--topic-prefix", default=None)
@click.option("--app-id", default=None, help="Faust app id = consumer group")
@click.option("--metrics-port", type=int, default=None, help="Prometheus port (0 = off)")
def worker_command(bootstrap, topic_prefix, app_id, metrics_port) -> None:
    """Run the Faust worker: validation and the label join (dead letters, labels)."""
    from streams.label_join.faust.app import run_worker
    from streams.settings import StreamSettings

    settings = StreamSettings(**{k: v for k, v in dict(app_id=app_id, metrics_port=metrics_port).items() if v is not None})
    settings.kafka = settings.kafka.with_overrides(bootstrap, topic_prefix)
    run_worker(settings)


@click.command("aggregates")
@click.option("--bootstrap", default=None, help="Kafka bootstrap (default: CONVCG_STREAMS_KAFKA__BOOTSTRAP, KAFKA_BOOTSTRAP)")
@click.option("--topic-prefix", default=None)
@click.option("--metrics-port", type=int, default=None, help="Prometheus port (0 = off)")
def aggregates_command(bootstrap, topic_prefix, metrics_port) -> None:
    """Run a streaming feature aggregates worker (one of a consumer group): user, item and
    advertiser windows -> the feature-updates topic (state restored from its changelogs)."""
    from streams.aggregates.worker import run_aggregates
    from streams.settings import StreamSettings

    settings = StreamSettings(**({} if metrics_port is None else {"metrics_port": metrics_port}))
    settings.kafka = settings.kafka.with_overrides(bootstrap, topic_prefix)
    run_aggregates(settings)


@click.command("labels")
@click.option("--bootstrap", required=True)
@click.option("--topic-prefix", default="")
@click.option("--timeout", type=float, default=10.0)
def labels_command(bootstrap, topic_prefix, timeout) -> None:
    """Print label counts by kind from the labels topic (deduplicated on label_id)."""
    from convcg.contract import Topics
    from convcg.kafka.io import read_topic
    from streams.label_join.labels import count_by_kind, dedupe

    raw = read_topic(bootstrap, Topics(topic_prefix).labels, timeout=timeout)
    labels = dedupe(raw)
    click.echo(f"{len(labels)} labels ({len(raw) - len(labels)} redelivered copies dropped)")
    for kind, n in count_by_kind(labels).items():
        click.echo(f"  {kind:<11} {n}")
