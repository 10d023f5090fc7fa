"""The options several ``convcg`` commands share, spelled and explained once: one name per
concept across the CLI (``--bootstrap``, ``--topic-prefix``, ``--registry``, ``--online-store``,
``--redis``), each falling back the same way (a flag, else the component's own setting, else the
deployment-wide one: see `convcg.kafka.settings`)."""

from __future__ import annotations

from pathlib import Path

import click

from convcg.kafka.settings import BOOTSTRAP_ENV, DEFAULT_BOOTSTRAP, KafkaSettings


def _component_env(prefix: str | None, name: str) -> str:
    return f"{prefix}{name}, else " if prefix else ""


def bootstrap_option(env_prefix: str | None = None, extra: str = ""):
    """``--bootstrap HOST:PORT``; unset: ``<env_prefix>KAFKA__BOOTSTRAP``, else ``KAFKA_BOOTSTRAP``."""
    return click.option(
        "--bootstrap", default=None, metavar="HOST:PORT",
        help=f"Kafka bootstrap servers{extra} [default: {_component_env(env_prefix, 'KAFKA__BOOTSTRAP')}"
             f"{BOOTSTRAP_ENV}, else {DEFAULT_BOOTSTRAP}].")


def topic_prefix_option(env_prefix: str | None = None):
    """``--topic-prefix P``; unset: ``<env_prefix>KAFKA__TOPIC_PREFIX``, else none."""
    return click.option(
        "--topic-prefix", default=None, metavar="PREFIX",
        help="Prefix of every topic name, so several deployments share one broker "
             f"[default: {_component_env(env_prefix, 'KAFKA__TOPIC_PREFIX')}none].")


def registry_option(env_prefix: str):
    """``--registry DIR``: the model registry's root (model versions, and index artifacts under
    ``DIR/indexes`` unless the index root is set on its own)."""
    return click.option(
        "--registry", default=None, type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
        help=f"Model registry root [default: {env_prefix}REGISTRY_ROOT, else var/registry].")


def online_store_option(*choices: str, default: str | None = None, extra: str = ""):
    """``--online-store KIND``: the Feast online store (the features setting ``online_store``)."""
    where = f"{default}" if default else "CONVCG_FEATURES_ONLINE_STORE, else sqlite"
    return click.option(
        "--online-store", type=click.Choice(list(choices or ("sqlite", "redis"))), default=default,
        help=f"Feast online store{extra} [default: {where}].")


def redis_option(help: str | None = None):
    """``--redis HOST:PORT``: an existing Redis as the online store (implies ``--online-store redis``)."""
    return click.option(
        "--redis", default=None, metavar="HOST:PORT",
        help=help or "The Redis server of the online store; implies --online-store redis "
                     "[default: CONVCG_FEATURES_REDIS_CONNECTION, else 127.0.0.1:6379].")


def kafka_settings_for(bootstrap: str | None, topic_prefix: str | None) -> KafkaSettings:
    """`KafkaSettings` for a command with no settings object of its own: the flags, else
    ``KAFKA_BOOTSTRAP`` / no prefix."""
    return KafkaSettings().with_overrides(bootstrap, topic_prefix)


def with_registry(settings, registry: Path | None):
    """``settings`` (a component's settings object with ``registry_root``) with ``--registry``
    applied: the index artifacts follow to ``<registry>/indexes`` unless their root was set."""
    if registry is None:
        return settings
    update = {"registry_root": Path(registry)}
    if "index_root" in type(settings).model_fields and "index_root" not in settings.model_fields_set:
        update["index_root"] = Path(registry) / "indexes"
    return settings.model_copy(update=update)
