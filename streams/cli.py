"""Click commands of the streams component: `worker` (the label join), `aggregates` (the
streaming feature aggregates), `labels`, `watermarks` (and `replay`, from replay.py)."""

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


@click.group("watermarks")
def watermarks_command() -> None:
    """Show or reset the label join's per-partition watermarks (from its changelog)."""


def _stream_settings(bootstrap, app_id):
    from streams.settings import StreamSettings

    settings = StreamSettings(**({} if app_id is None else {"app_id": app_id}))
    settings.kafka = settings.kafka.with_overrides(bootstrap, None)
    return settings


@watermarks_command.command("show")
@click.option("--bootstrap", default=None, help="Kafka bootstrap (default: CONVCG_STREAMS_KAFKA__BOOTSTRAP, KAFKA_BOOTSTRAP)")
@click.option("--app-id", default=None, help="The worker's app id (default: CONVCG_STREAMS_APP_ID)")
def watermarks_show(bootstrap, app_id) -> None:
    """Each partition's watermark and pending impressions, as a restore would see them."""
    from streams.label_join.watermark_admin import describe, show

    s = _stream_settings(bootstrap, app_id)
    try:
        views = show(s.kafka.bootstrap, s.app_id)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    for view in views:
        click.echo(describe(view))


@watermarks_command.command("reset")
@click.option("--partition", type=click.IntRange(min=0), required=True,
              help="The join partition whose watermark is reset (as `watermarks show` lists them).")
@click.option("--to", "ts", type=float, required=True, help="The new watermark (Unix seconds of event time).")
@click.option("--force", is_flag=True, help="Also while the workers' group has members, or a time ahead of the clock.")
@click.option("--bootstrap", default=None, help="Kafka bootstrap (default: CONVCG_STREAMS_KAFKA__BOOTSTRAP, KAFKA_BOOTSTRAP)")
@click.option("--app-id", default=None, help="The worker's app id (default: CONVCG_STREAMS_APP_ID)")
def watermarks_reset(partition, ts, force, bootstrap, app_id) -> None:
    """Reset one partition's watermark (stop the workers first: a running one overwrites it)."""
    import time

    from streams.label_join.watermark_admin import active_members, check_reset, describe, reset, show

    s = _stream_settings(bootstrap, app_id)
    try:
        check_reset(ts, time.time(), s.max_future_s, force)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--to") from None
    try:
        views = {v.partition: v for v in show(s.kafka.bootstrap, s.app_id)}
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    if partition not in views:
        raise click.BadParameter(f"the join has partitions 0..{len(views) - 1}", param_hint="--partition")
    members = active_members(s.kafka.bootstrap, s.app_id)
    if members and not force:
        raise click.ClickException(f"the group {s.app_id} has {members} member(s): stop the workers first "
                                   "(a running worker overwrites the entry), or pass --force")
    click.echo("before: " + describe(views[partition]))
    reset(s.kafka.bootstrap, s.app_id, partition, ts)
    after = {v.partition: v for v in show(s.kafka.bootstrap, s.app_id)}[partition]
    click.echo("after:  " + describe(after))
