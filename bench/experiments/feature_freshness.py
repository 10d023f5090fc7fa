"""How fresh must the user's features be? One trained conversion retriever queried with its
user features (the point-in-time engagement sequence) delayed.

Trains the conversion retriever once under the point-in-time protocol (``convcg eval``'s
model, ``training.learn.recipes.retriever_config``, early-stopped on the validation slice), then
grades it on the same test queries with the user's features delayed by each ``--delays``
(seconds; ``frozen`` = as of the split time T, the static protocol's state): a query at time
t sees the engagements before t - delay (``training.evaluation.feature_delay``). Item-kNN and EASE, which
read the same history, are graded the same way; popularity reads none and is the floor.

Prints one table, writes ``var/reports/feature_freshness.{md,json,png}``.

    python -m bench.experiments.feature_freshness                  # ~5-8 min on 2 cores
    python -m bench.experiments.feature_freshness --max-epochs 3   # quicker, a weaker model
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from training.evaluation.protocol import HEADLINE, POINT_IN_TIME

REPORT_DIR = Path("var/reports")
NAME = "feature_freshness"
DEFAULT_DELAYS = "0,60,600,3600,86400,frozen"
METRIC = HEADLINE
SCORED = ("conversion_retriever", "ease", "item_knn", "popularity")


def parse_delays(text: str) -> list[float]:
    from training.evaluation.feature_delay import FROZEN

    out = []
    for part in (p.strip() for p in text.split(",")):
        out.append(FROZEN if part == "frozen" else float(part))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="movielens-100k")
    ap.add_argument("--delays", default=DEFAULT_DELAYS)
    ap.add_argument("--max-epochs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default="var/cache/eval")
    ap.add_argument("--out", default=str(REPORT_DIR))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from loop.eval import load_dataset
    from training.evaluation.baselines import baseline_scorers
    from training.evaluation.feature_delay import delay_label, delayed_scorer
    from training.evaluation.protocol import EvaluationSet, split_time
    from training.evaluation.scoring import grade, model_scorer
    from training.evaluation.settings import EvalSettings
    from training.learn.recipes import retriever_config
    from training.learn.sequences import SequenceFeatures
    from training.evaluation.convergence import (
        ConvergenceConfig,
        train_to_convergence,
    )

    delays = parse_delays(args.delays)
    settings = EvalSettings()
    labels, inter = load_dataset(args.dataset, Path(args.cache_dir))
    cut = split_time(inter, settings.protocol.test_quantile)
    evaluation = EvaluationSet.build(inter, cut, tasks=("conversion",), protocols=(POINT_IN_TIME,))
    training = ConvergenceConfig(seed=args.seed, **({"max_epochs": args.max_epochs} if args.max_epochs else {}))
    config = retriever_config()
    start = time.perf_counter()
    model = train_to_convergence(labels, inter, cut, config, training, settings.protocol).model
    train_s = time.perf_counter() - start
    scorers, _ = baseline_scorers(inter, cut, settings.baselines, settings.protocol)
    scorers = {"conversion_retriever": model_scorer(model, SequenceFeatures(inter, config)),
               **{n: scorers[n] for n in SCORED if n in scorers}}
    rows = []
    for delay in delays:
        row = {"delay": delay_label(delay), "delay_s": None if delay == float("inf") else delay}
        for name, scorer in scorers.items():
            row[name] = grade(evaluation, delayed_scorer(scorer, evaluation.index, delay, cut),
                              settings.protocol)[METRIC]
        rows.append(row)
        logging.info("delay %s: %s", row["delay"], {n: round(row[n], 4) for n in scorers})

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header = "| user features delayed by | " + " | ".join(scorers) + " |"
    lines = [f"# Feature freshness ({args.dataset}, point-in-time {METRIC}, "
             f"{len(evaluation.queries[('conversion', POINT_IN_TIME)])} test conversions)", "",
             f"    python -m bench.experiments.feature_freshness --dataset {args.dataset}", "",
             header, "| --- |" + " ---: |" * len(scorers)]
    lines += ["| " + r["delay"] + " | " + " | ".join(f"{r[n]:.4f}" for n in scorers) + " |" for r in rows]
    fresh = rows[0]["conversion_retriever"]
    lines += ["", f"The retriever keeps {rows[-1]['conversion_retriever'] / fresh:.0%} of its fresh-feature recall "
              f"when its features are {rows[-1]['delay']}; model trained in {train_s:.0f} s.", ""]
    text = "\n".join(lines)
    print(text)
    (out / f"{NAME}.md").write_text(text + f"\n![feature freshness]({NAME}.png)\n")
    (out / f"{NAME}.json").write_text(json.dumps({"dataset": args.dataset, "metric": METRIC, "rows": rows}, indent=2))
    plot(rows, list(scorers), out / f"{NAME}.png", args.dataset)
    print(f"wrote {out / NAME}.md, .json, .png")
    return 0


def plot(rows: list[dict], names: list[str], path: Path, dataset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    x = range(len(rows))
    for name in names:
        ax.plot(x, [r[name] for r in rows], marker="o", label=name,
                linestyle="--" if name == "popularity" else "-")
    ax.set_xticks(list(x), [r["delay"] for r in rows])
    ax.set_xlabel("user features delayed by")
    ax.set_ylabel(f"point-in-time {METRIC}")
    ax.set_title(f"How fresh must the features be? ({dataset})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
