"""Click commands of the streams component: `worker` (the label join), `aggregates` (the
streaming feature aggregates), `labels` (and `replay`, from replay.py)."""

from __future__ import annotations

import click

from convcg.cli_options import bootstrap_option, topic_prefix_option
from streams.replay.replay import replay_command  # noqa: F401  (exported to loop.cli)

STREAMS_ENV = "CONVCG_STREAMS_"


@click.command("worker")
@bootstrap_option(STREAMS_ENV)
@topic_prefix_option(STREAMS_ENV)
@click.option("--app-id", default=None,
              help="Faust app id = the label-join consumer group [default: CONVCG_STREAMS_APP_ID, else convcg-streams].")
@click.option("--metrics-port", type=int, default=None,
              help="Serve Prometheus /metrics on this port; 0 = off [default: CONVCG_STREAMS_METRICS_PORT, else 0].")
def worker_command(bootstrap, topic_prefix, app_id, metrics_port) -> None:
    """Run the Faust worker: validation and the label join (dead letters, labels)."""
    from streams.label_join.faust.app import run_worker
    from streams.settings import StreamSettings

    settings = StreamSettings(**{k: v for k, v in dict(app_id=app_id, metrics_port=metrics_port).items() if v is not None})
    settings.kafka = settings.kafka.with_overrides(bootstrap, topic_prefix)
    run_worker(settings)


@click.command("aggregates")
@bootstrap_option(STREAMS_ENV)
@topic_prefix_option(STREAMS_ENV)
@click.option("--metrics-port", type=int, default=None,
              help="Serve Prometheus /metrics on this port; 0 = off [default: CONVCG_STREAMS_METRICS_PORT, else 0].")
def aggregates_command(bootstrap, topic_prefix, metrics_port) -> None:
    """Run a streaming feature aggregates worker (one of a consumer group): user, item and
    advertiser windows -> the feature-updates topic (state restored from its changelogs)."""
    from streams.aggregates.worker import run_aggregates
    from streams.settings import StreamSettings

    settings = StreamSettings(**({} if metrics_port is None else {"metrics_port": metrics_port}))
    settings.kafka = settings.kafka.with_overrides(bootstrap, topic_prefix)
    run_aggregates(settings)


@click.command("labels")
@bootstrap_option(STREAMS_ENV)
@topic_prefix_option(STREAMS_ENV)
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Stop reading after this many seconds without records.")
def labels_command(bootstrap, topic_prefix, timeout) -> None:
    """Print label counts by kind from the labels topic (deduplicated on label_id)."""
    from convcg.kafka.io import read_topic
    from streams.label_join.labels import count_by_kind, dedupe
    from streams.settings import StreamSettings

    kafka = StreamSettings().kafka.with_overrides(bootstrap, topic_prefix)
    raw = read_topic(kafka.bootstrap, kafka.topics.labels, timeout=timeout)
    labels = dedupe(raw)
    click.echo(f"{len(labels)} labels ({len(raw) - len(labels)} redelivered copies dropped)")
    for kind, n in count_by_kind(labels).items():
        click.echo(f"  {kind:<11} {n}")
