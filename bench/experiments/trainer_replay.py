"""The online trainer's steps replayed offline, graded as ``convcg up`` grades them.

    python -m bench.experiments.trainer_replay [--limit 60000] [--steps 1] [--baselines]

The log is split as ``convcg up`` splits it (warm-up 40%, live to 90%, the last 10% held out,
never trained on); the streaming label rules label the warm-up and live events offline
(``streams.label_join.joiner.compute_labels``). The first model is trained on the labels known by
the end of the warm-up; the live labels, in label-time order, are then cut into ``--steps``
equal batches, each a trainer step with the trainer's own defaults (``TrainingSettings``: the
online trainer's model, fine-tune or retrain from scratch by ``retrain_growth``, the quality
gate, the held-out slice carried to the next step). After every step the serving model is
graded on the held-out tail under the point-in-time protocol, beside popularity, item-kNN and
EASE (``--baselines``). No broker, no processes: the model's side of ``convcg up`` only, so a
training recipe can be tried in a minute.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from training.config import TrainingSettings
from training.evaluation.protocol import HEADLINE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="movielens-100k")
    ap.add_argument("--limit", type=int, default=60_000, help="first N events of the log (0 = all)")
    ap.add_argument("--steps", type=int, default=1, help="trainer steps over the live labels")
    ap.add_argument("--baselines", action="store_true", help="also grade popularity, item-kNN and EASE")
    ap.add_argument("--validation", action="store_true",
                    help="choose, don't report: train on the log to 80%% and grade on 80-90%% (the test tail unread)")
    ap.add_argument("--finetune-negative-share", type=float, default=None,
                    help="TrainingSettings.finetune_negative_share for this run (default: the setting's)")
    args = ap.parse_args()

    from streams.label_join.joiner import compute_labels
    from streams.replay.datasets import load_log
    from streams.replay.datasets.event_log import EventLog
    from training.evaluation.baselines import baseline_scorers
    from training.evaluation.protocol import POINT_IN_TIME, EvaluationSet
    from training.evaluation.scoring import grade, model_scorer
    from training.evaluation.settings import EvalSettings
    from training.history import interactions_from_log
    from training.learn.examples import full_catalog
    from training.learn.sequences import SequenceFeatures, item_frame
    from training.trainer.publish import retrain_due
    from training.trainer.step import finetune, train_full

    full = load_log(args.dataset)
    events = full.events[:args.limit] if args.limit else full.events
    n = len(events)
    n_warm, n_live_end = int(n * 0.4), int(n * (0.8 if args.validation else 0.9))
    labels = pd.DataFrame([lab.to_dict() for lab in compute_labels(events[:n_live_end])])
    graded = events[:int(n * 0.9)] if args.validation else events  # the validation run never reads the tail
    inter = interactions_from_log(EventLog("replay", list(graded), full.catalog))
    cut = events[n_live_end].ts
    evaluation, protocol = EvaluationSet.build(inter, cut), EvalSettings().protocol
    items = item_frame(inter, full.catalog)
    print(f"{args.dataset}: {n:,} events, {len(labels):,} labels; "
          f"{len(evaluation.queries[('conversion', POINT_IN_TIME)]):,} test conversions")
    if args.baselines:
        scorers, _ = baseline_scorers(inter, cut, EvalSettings().baselines, protocol)
        for name in ("popularity", "item_knn", "ease"):
            print(f"  {name}: PIT {HEADLINE} {grade(evaluation, scorers[name], protocol)[HEADLINE]:.4f}")

    def recall(model) -> float:
        return grade(evaluation, model_scorer(model, SequenceFeatures(inter, model.config), items),
                     protocol)[HEADLINE]

    settings = TrainingSettings()
    if args.finetune_negative_share is not None:
        settings = settings.model_copy(update={"finetune_negative_share": args.finetune_negative_share})
    catalog = full_catalog(full.catalog, labels)
    warm_ts = events[n_warm].ts
    older = labels[labels["label_ts"] < warm_ts]
    started = time.perf_counter()
    model = train_full(older, catalog, settings.model, optim=settings.optim, holdout_fraction=settings.holdout_fraction,
                       show_progress=False, gate_k=settings.gate_k, query_time=settings.query_time).model
    print(f"first model on {len(older):,} labels ({time.perf_counter() - started:.0f} s): PIT {HEADLINE} "
          f"{recall(model):.4f}")
    at_last_scratch, carried = len(older), labels.iloc[:0]
    live = labels[labels["label_ts"] >= warm_ts].sort_values("label_ts", kind="stable")
    for batch in np.array_split(live, args.steps):
        fresh = pd.concat([carried, batch], ignore_index=True)
        scratch = retrain_due(settings, len(older) + len(fresh), at_last_scratch)
        at_last_scratch = len(older) + len(fresh) if scratch else at_last_scratch
        started = time.perf_counter()
        step = finetune(model, fresh, older, catalog, settings, show_progress=False, from_scratch=scratch)
        older = pd.concat([older, fresh[~fresh["label_id"].isin(step.heldout["label_id"])]], ignore_index=True)
        carried, model = step.heldout, step.model if step.passed else model
        print(f"{'retrain' if scratch else 'fine-tune'} on {len(fresh):,} new labels "
              f"({time.perf_counter() - started:.0f} s, {'published' if step.passed else 'refused'}: "
              f"{step.reason}): serving PIT {HEADLINE} {recall(model):.4f}")


if __name__ == "__main__":
    main()
