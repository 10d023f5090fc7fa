"""Click commands of the features component: ``convcg features apply|sink|serve`` and
``convcg dataset``. Feast, aiokafka and uvicorn are imported inside the commands."""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path

import click

from convcg.cli_options import bootstrap_option, online_store_option, redis_option, topic_prefix_option

log = logging.getLogger(__name__)


def _settings(redis: str | None = None, **overrides):
    """The features settings with the flags given; ``--redis HOST:PORT`` means the Redis store there."""
    from features.settings import FeaturesSettings

    if redis:
        if overrides.get("online_store") == "sqlite":
            raise click.UsageError("--redis and --online-store sqlite contradict each other")
        overrides.update(online_store="redis", redis_connection=redis)
    return FeaturesSettings(**{k: v for k, v in overrides.items() if v is not None})


FEATURES_ENV = "CONVCG_FEATURES_"


@click.group("features")
def features_command() -> None:
    """Feast feature store: apply the repo, run the Kafka sink, serve online lookups."""


@features_command.command("apply")
@online_store_option()
@redis_option()
def apply_cmd(online_store: str | None, redis: str | None) -> None:
    """Register entities, push sources and feature views (idempotent)."""
    from features.repo.store import apply_repo

    s = _settings(redis, online_store=online_store)
    apply_repo(s)
    click.echo(f"applied Feast project {s.project} (online store {s.online_store}, registry {s.registry_file})")


@features_command.command("sink")
@bootstrap_option(FEATURES_ENV)
@topic_prefix_option(FEATURES_ENV)
@online_store_option()
@redis_option()
@click.option("--metrics-port", type=int, default=None,
              help="Serve Prometheus /metrics on this port [default: CONVCG_FEATURES_METRICS_PORT, else off].")
def sink_cmd(bootstrap: str | None, topic_prefix: str | None, online_store: str | None, redis: str | None,
             metrics_port: int | None) -> None:
    """Consume feature updates and labels; write them to Feast (online + offline) and the label table."""
    from convcg.process.runtime import run_until_signalled
    from features.sink.worker import FeatureSink

    s = _settings(redis, online_store=online_store, metrics_port=metrics_port)
    s.kafka = s.kafka.with_overrides(bootstrap, topic_prefix)
    bootstrap = s.kafka.bootstrap
    if s.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(s.metrics_port, addr=s.metrics_host)
        log.info("sink metrics on http://%s:%d/metrics", s.metrics_host, s.metrics_port)
    sink = FeatureSink(s, bootstrap)
    run_until_signalled(sink.stop_requested, sink.run)


@features_command.command("serve")
@click.option("--host", default=None,
              help="Bind address; beyond loopback it needs CONVCG_FEATURES_API_TOKEN [default: CONVCG_FEATURES_HOST, "
                   "else 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [default: CONVCG_FEATURES_PORT, else 8610].")
@online_store_option()
@redis_option()
@click.option("--workers", type=int, default=1, show_default=True, help="uvicorn worker processes.")
def serve_cmd(host: str | None, port: int | None, online_store: str | None, redis: str | None,
              workers: int) -> None:
    """HTTP lookups of online features (POST /online-features, /health, /metrics)."""
    import uvicorn

    from convcg.http_auth import UnsafeBind, check_bind

    s = _settings(redis, host=host, port=port, online_store=online_store)
    try:
        check_bind(s.host, s.api_token, service="features service", token_setting="CONVCG_FEATURES_API_TOKEN")
    except UnsafeBind as exc:
        raise click.ClickException(str(exc)) from None
    if workers > 1:  # each worker builds its settings from the environment
        os.environ["CONVCG_FEATURES_ONLINE_STORE"] = s.online_store
        os.environ["CONVCG_FEATURES_REDIS_CONNECTION"] = s.redis_connection
        uvicorn.run("features.service:app_from_env", factory=True, host=s.host, port=s.port,
                    workers=workers, log_level="warning", access_log=False)
        return
    from features.service import create_service

    log.info("serving online features on http://%s:%d (store %s)", s.host, s.port, s.online_store)
    uvicorn.run(create_service(s), host=s.host, port=s.port, log_level="warning", access_log=False)


@click.command("dataset")
@click.option("--as-of", type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]), default=None,
              help="Snapshot time (UTC): only labels and feature rows ingested by then. "
              "Default: now minus dataset_as_of_lag_seconds (60 s).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Output parquet (default under var/datasets/).")
@click.option("--engine", type=click.Choice(["auto", "feast", "asof"]), default=None,
              help="Join engine (default: settings.dataset_engine = auto: Feast's historical "
                   "retrieval up to dataset_feast_max_labels labels, merge_asof above).")
def dataset_command(as_of: datetime | None, out: Path | None, engine: str | None) -> None:
    """Build a point-in-time-correct training set (labels + features as of impression time)."""
    from features.dataset import build_training_set

    result = build_training_set(_settings(), as_of=as_of, out_path=out, engine=engine)
    click.echo(f"{len(result.frame)} rows x {result.frame.shape[1]} columns as of "
               f"{result.as_of.isoformat()} in {result.seconds:.1f}s -> {result.path}")
