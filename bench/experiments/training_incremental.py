"""Incremental fine-tuning on MovieLens-100k labels: two targets.

1. One incremental step over 10k new labels (``training.trainer.publish.finetune_step``: encode,
   fine-tune on the new labels + an equal replay sample, evaluate candidate and serving model
   on the held-out slice, gate, publish, plot) in <= 30 s on 2 cores.
2. Fine-tuning reaches >= 98% of a full retrain's conversion recall@100 at <= 10% of its
   compute (examples processed; training seconds printed too), on the same data.

    python -m bench.experiments.training_incremental [--epochs 3] [--skip-compare]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench.rigs.training import (
    THREADS,
    incremental_vs_full,
    movielens_labels,
    sample_negatives,
)
from model.config import ModelConfig
from training.config import OptimConfig, TrainingSettings
from training.evaluation.protocol import HEADLINE, HEADLINE_K, metric_name
from training.learn.examples import full_catalog, time_split
from training.trainer.publish import finetune_step, full_training_step

STEP_TARGET_S = 30.0
RECALL_TARGET = 0.98
COMPUTE_TARGET = 0.10
#: the figures the comparison prints
SHOWN = (HEADLINE, metric_name("conversion", 1000), metric_name("engagement", HEADLINE_K))


def bench_step(labels, catalog, new_labels: int, epochs: int) -> None:
    older = labels.iloc[: len(labels) - new_labels]
    new = labels.iloc[len(labels) - new_labels:]
    with tempfile.TemporaryDirectory() as tmp:
        settings = TrainingSettings(registry_root=Path(tmp) / "registry", label_store=Path(tmp) / "labels",
                                    optim=OptimConfig(epochs=epochs, batch_size=1024, threads=THREADS))
        start = time.perf_counter()
        full_training_step(settings, older, catalog, show_progress=False)
        base_s = time.perf_counter() - start
        start = time.perf_counter()
        outcome = finetune_step(settings, new, older, catalog, show_progress=False)
        step_s = time.perf_counter() - start
    m = outcome.metrics
    print(f"[step] base model: full training on {len(older)} labels, {epochs} epochs: {base_s:.1f}s")
    print(f"[step] incremental step over {new_labels} new labels (+ replay {m['examples_seen']} examples "
          f"trained, eval of candidate and serving, gate, publish): {step_s:.1f}s "
          f"(training {m['train_seconds']:.1f}s); published={outcome.published}; {outcome.reason}")
    print(f"[step] target <= {STEP_TARGET_S:.0f}s: {'MET' if step_s <= STEP_TARGET_S else 'MISSED'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new-labels", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=1, help="epochs of full (re)training (more overfit here)")
    ap.add_argument("--negative-fraction", type=float, default=0.5)
    ap.add_argument("--skip-compare", action="store_true")
    ap.add_argument("--new-fraction", type=float, default=0.05, help="share of all labels that are new")
    ap.add_argument("--replay-ratio", type=float, default=0.5, help="older labels replayed per new label")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    labels, catalog, secs = movielens_labels()
    labels = sample_negatives(labels, args.negative_fraction)
    catalog = full_catalog(catalog, labels)
    print(f"MovieLens-100k: {len(labels)} labels (negatives kept {args.negative_fraction:.0%}), labelled in "
          f"{secs:.0f}s; torch threads {THREADS}")
    history, _ = time_split(labels, 0.2)
    bench_step(history, catalog, args.new_labels, args.epochs)
    if args.skip_compare:
        return
    optim = OptimConfig(epochs=args.epochs, batch_size=1024, threads=THREADS)
    cmp = incremental_vs_full(labels, catalog, ModelConfig(), optim, new_fraction=args.new_fraction,
                              replay_ratio=args.replay_ratio)
    for name, t in (("full retrain", cmp.full), ("incremental", cmp.incremental)):
        shown = " ".join(f"{m}={t.metrics[m]:.4f}" for m in SHOWN)
        print(f"[compare] {name}: {shown} examples={t.stats.examples_seen} train_s={t.stats.seconds:.1f}")
    print(f"[compare] incremental/full: recall@100 {cmp.recall_ratio:.1%} (target >= {RECALL_TARGET:.0%}), "
          f"compute {cmp.compute_ratio_examples:.1%} of examples (target <= {COMPUTE_TARGET:.0%}), "
          f"{cmp.compute_ratio_seconds:.1%} of training seconds")
    met = cmp.recall_ratio >= RECALL_TARGET and cmp.compute_ratio_examples <= COMPUTE_TARGET
    print(f"[compare] target: {'MET' if met else 'MISSED'}")


if __name__ == "__main__":
    main()
