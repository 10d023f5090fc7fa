"""Click commands of the training component (torch is imported inside the commands)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from convcg.cli_options import bootstrap_option, registry_option, topic_prefix_option, with_registry

TRAINING_ENV = "CONVCG_TRAINING_"


def _settings(registry: Path | None = None, **overrides):
    from training.config import TrainingSettings

    settings = TrainingSettings()
    settings.kafka = settings.kafka.with_overrides(overrides.pop("bootstrap", None), overrides.pop("topic_prefix", None))
    update = {k: v for k, v in overrides.items() if v is not None}
    return with_registry(settings.model_copy(update=update), registry)


def _echo_outcome(outcome) -> None:
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in outcome.metrics.items()
             if not isinstance(v, dict)}
    click.echo(json.dumps({"published": outcome.published, "reason": outcome.reason, "metrics": shown},
                          indent=2, default=str))


@click.command("train")
@click.option("--labels", "labels_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Training set (.parquet/.csv/.jsonl) with the label columns (+ feature columns).")
@click.option("--catalog", "catalog_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Item catalog (item_id, advertiser_id, category, price). Default: settings.catalog_path.")
@registry_option(TRAINING_ENV)
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Passes over the training set [default: CONVCG_TRAINING_OPTIM__EPOCHS, else the recipe's].")
def train_command(labels_path: str, catalog_path: str | None, registry: Path | None, epochs: int | None) -> None:
    """Full training on a label table; publishes a new version into the registry."""
    from training.trainer.publish import full_training_step, load_catalog, read_table

    settings = _settings(registry)
    if epochs:
        settings = settings.model_copy(update={"optim": settings.optim.model_copy(update={"epochs": epochs})})
    catalog = read_table(catalog_path) if catalog_path else load_catalog(settings)
    _echo_outcome(full_training_step(settings, read_table(labels_path), catalog))


@click.command("finetune")
@click.option("--new", "new_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="New labels (.parquet/.csv/.jsonl).")
@click.option("--older", "older_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Older labels to replay from (default: the trainer's label store).")
@click.option("--catalog", "catalog_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Item catalog (item_id, advertiser_id, category, price). Default: settings.catalog_path.")
@registry_option(TRAINING_ENV)
def finetune_command(new_path: str, older_path: str | None, catalog_path: str | None, registry: Path | None) -> None:
    """One incremental step from the current version; publishes only if the quality gate passes."""
    from training.trainer.label_store import LabelStore
    from training.trainer.publish import finetune_step, load_catalog, read_table

    settings = _settings(registry)
    new = read_table(new_path)
    older = read_table(older_path) if older_path else LabelStore(settings.label_store).load()
    if len(older) and "label_id" in older.columns and "label_id" in new.columns:
        older = older[~older["label_id"].isin(new["label_id"])]
    catalog = read_table(catalog_path) if catalog_path else load_catalog(settings)
    outcome = finetune_step(settings, new, older, catalog)
    _echo_outcome(outcome)
    if outcome.published is None:
        raise SystemExit(3)


@click.command("trainer")
@bootstrap_option(TRAINING_ENV)
@topic_prefix_option(TRAINING_ENV)
@registry_option(TRAINING_ENV)
@click.option("--trigger-labels", type=int, default=None,
              help="Fine-tune after this many new labels [default: CONVCG_TRAINING_TRIGGER_LABELS, else 10000].")
@click.option("--trigger-seconds", type=float, default=None,
              help="... or after this many seconds with new labels [default: CONVCG_TRAINING_TRIGGER_SECONDS, else 3600].")
@click.option("--metrics-port", type=int, default=None,
              help="Serve Prometheus /metrics on this port; 0 = off [default: CONVCG_TRAINING_METRICS_PORT, else 0].")
def trainer_command(bootstrap, topic_prefix, registry, trigger_labels, trigger_seconds, metrics_port) -> None:
    """Consume labels and fine-tune the current model when enough have arrived."""
    from training.trainer.service import TrainerService

    settings = _settings(registry, bootstrap=bootstrap, topic_prefix=topic_prefix, trigger_labels=trigger_labels,
                         trigger_seconds=trigger_seconds, metrics_port=metrics_port)
    if settings.trainer_niceness:  # the trainer is batch work: the streams keep the cores first
        os.nice(settings.trainer_niceness)
    service = TrainerService(settings, show_progress=True)
    try:
        service.run()
    except KeyboardInterrupt:
        click.echo("trainer stopped")


@click.group("registry")
def registry_command() -> None:
    """Inspect the model registry, roll back."""


@registry_command.command("list")
@registry_option(TRAINING_ENV)
def registry_list(registry: Path | None) -> None:
    """Versions, oldest first; * marks the current one."""
    from registry.store import ModelRegistry
    from training.evaluation.protocol import HEADLINE

    reg = ModelRegistry(_settings(registry).registry_root)
    current = reg.current_version()
    for version in reg.versions():
        m = reg.metrics(version)
        recall = m.get(HEADLINE)
        shown = f"{recall:.4f}" if isinstance(recall, float) else "-"
        click.echo(f"{'*' if version == current else ' '} {version}  {HEADLINE}={shown}  "
                   f"mode={reg.data_range(version).get('mode', '?')}")


@registry_command.command("rollback")
@registry_option(TRAINING_ENV)
def registry_rollback(registry: Path | None) -> None:
    """Make the previous version current."""
    from registry.store import ModelRegistry, RegistryError

    reg = ModelRegistry(_settings(registry).registry_root)
    try:
        click.echo(f"current version is now {reg.rollback()}")
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from exc
