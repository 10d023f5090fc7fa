"""`convcg eval`: point-in-time evaluation of the conversion retriever, the engagement-only
two-tower, the ablations and the baselines on one dataset (``training.evaluation.run``).

The dataset's event log is labelled by the streaming label rules run offline (the labels the
trainer would consume); the protocol reads the raw events. Labels are cached as parquet
beside the wheel cache, keyed by dataset and seed. With ``--resume`` every graded result is
kept too (``training.evaluation.graded_runs``), so a long run that was stopped continues where it was.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

log = logging.getLogger(__name__)
DATASETS = ("movielens-100k", "movielens-1m")


def load_dataset(name: str, cache_dir: Path, with_labels: bool = True):
    """(labels frame or None, interactions) of a named event log."""
    import pandas as pd

    from streams.replay.datasets import load_log
    from streams.label_join.joiner import compute_labels
    from training.history import interactions_from_log

    event_log = load_log(name)
    inter = interactions_from_log(event_log)
    cached = cache_dir / f"labels-{name}.parquet"
    if not with_labels:
        return None, inter
    if cached.exists():
        labels = pd.read_parquet(cached)
    else:
        log.info("labelling %s (%d events) with the streaming label rules", name, len(event_log))
        labels = pd.DataFrame([lab.to_dict() for lab in compute_labels(event_log.events)])
        cached.parent.mkdir(parents=True, exist_ok=True)
        labels.to_parquet(cached)
    return labels, inter


@click.command("eval")
@click.option("--dataset", type=click.Choice(DATASETS), default=DATASETS[0], show_default=True,
              help="The log to label and grade on (fetched once into the cache).")
@click.option("--seeds", type=int, default=1, show_default=True, help="Training seeds per model.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write the results here.")
@click.option("--ablations/--no-ablations", default=True, show_default=True,
              help="Also train the ablations (one lever of the conversion retriever switched off each).")
@click.option("--models/--no-models", default=True, show_default=True,
              help="--no-models: the baselines only (no labelling, no training).")
@click.option("--only", multiple=True, help="Train only these models (the baselines always run).")
@click.option("--max-epochs", type=click.IntRange(min=1), default=None,
              help="Most passes per model; early stopping may pick fewer [default: 8].")
@click.option("--batch-size", type=int, default=None, help="Training mini-batch size (default: the trainer's).")
@click.option("--refit/--no-refit", default=True, show_default=True,
              help="Re-train the best epoch count on the whole training period (--no-refit: keep the "
                   "best validation state; about half the training time).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default="var/cache/eval", show_default=True,
              help="Where labelled logs (and, with --resume, graded results) are kept between runs.")
@click.option("--resume", is_flag=True,
              help="Reuse results graded by earlier --resume runs with the same data, settings, config and "
                   "seed (kept under CACHE_DIR/graded), and keep each new one there as soon as it is graded. "
                   "The code is not part of the key: resume only runs of the same code.")
def eval_command(dataset: str, seeds: int, json_path: str | None, ablations: bool, models: bool,
                 only: tuple[str, ...], max_epochs: int | None, batch_size: int | None, refit: bool,
                 cache_dir: str, resume: bool) -> None:
    """Point-in-time retrieval quality: one table, and JSON with mean and std over seeds."""
    from training.evaluation.settings import EvalSettings
    from training.evaluation.graded_runs import GradedRunStore
    from training.evaluation.run import run_evaluation, table, verdict_table
    from training.evaluation.convergence import ConvergenceConfig

    overrides = {"max_epochs": max_epochs, "batch_size": batch_size}
    training = ConvergenceConfig(refit_full=refit, **{k: v for k, v in overrides.items() if v is not None})
    labels, inter = load_dataset(dataset, Path(cache_dir), with_labels=models)
    result = run_evaluation(dataset, labels, inter, EvalSettings(), seeds, training, ablations=ablations,
                            only=only, models=models,
                            store=GradedRunStore(Path(cache_dir) / "graded") if resume else None)
    click.echo(f"{dataset}, point-in-time protocol: T={result['split_time']:.0f}, "
               f"{result['conversion_queries']} test conversions ({result['conversion_queries_cold']} from users "
               f"cold at T), {result['engagement_queries']} test engagements; {seeds} seed(s)")
    click.echo(table(result["models"]))
    if result["reference_directions"]:
        click.echo("\nReference-design directions (paired bootstrap over test users, PIT conversion recall@100):")
        click.echo(verdict_table(result["reference_directions"]))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2))
        click.echo(f"wrote {json_path}")
