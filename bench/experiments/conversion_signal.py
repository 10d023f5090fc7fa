"""How much do conversion labels tell beyond engagements? The simple peers of ``convcg eval``
graded twice under the point-in-time protocol: fit on engagements (as ``convcg eval`` fits
them) and fit on conversions, both scored on the test conversions.

* popularity: engagement counts vs conversion counts per item;
* EASE vs "conversion EASE": the same user x item engagement history as input, the target
  either the engagements (EASE, zero diagonal) or the conversions (ridge regression from the
  engagement history to the conversions, ``B = (X'X + lambda I)^-1 X'Y``); lambda of each
  chosen on the validation slice;
* EASE with a conversion-rate prior: EASE's scores plus ``log`` of each item's smoothed
  conversions per engagement before the split, scaled to the query's mean score.

The ratio "fit on conversions / fit on engagements" is what a conversion-specific model can
gain over an engagement-only one from the conversion labels, for a model of that kind. On
MovieLens, where a conversion is a 5-star rating, the ratio is large for popularity (no
personalisation) and small once the history is used. Prints one table; ~1 min for ML-100k.

    python -m bench.experiments.conversion_signal [--dataset movielens-1m]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from training.evaluation.protocol import HEADLINE, POINT_IN_TIME

METRIC = HEADLINE
RATE_SMOOTHING = 5.0  # pseudo-engagements at the catalog's mean conversion rate


def conversion_matrix(inter, cut: float) -> np.ndarray:
    """[users, items] 1.0 where the user's conversion of the item was known before ``cut``."""
    c = inter.conversions
    c = c[c["known_ts"] < cut]
    y = np.zeros((inter.n_users, inter.n_items), dtype=np.float64)
    y[c["user"].to_numpy(), c["item"].to_numpy()] = 1.0
    return y


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="movielens-100k")
    ap.add_argument("--cache-dir", default="var/cache/eval")
    args = ap.parse_args(argv)

    from loop.eval import load_dataset
    from training import baselines as b
    from training.evaluation.protocol import EvaluationSet, split_time
    from training.evaluation.scoring import grade
    from training.evaluation.settings import EvalSettings

    _, inter = load_dataset(args.dataset, Path(args.cache_dir), with_labels=False)
    settings = EvalSettings()
    protocol, lambdas = settings.protocol, settings.baselines.ease_lambdas
    cut = split_time(inter, protocol.test_quantile)
    test = EvaluationSet.build(inter, cut, tasks=("conversion",), protocols=(POINT_IN_TIME,))

    def constant(scores: np.ndarray):
        return lambda batch, task: np.broadcast_to(scores, (len(batch), inter.n_items))

    def conversion_ease(c: float, lam: float):
        x = b.engagement_matrix(inter, c)
        gram = x.T @ x
        gram[np.diag_indices_from(gram)] += lam
        weights = np.linalg.solve(gram, x.T @ conversion_matrix(inter, c))
        ties = b.tie_break(inter, c)
        return lambda batch, task: batch.history_matrix() @ weights + ties[task]

    def ease_with_rate(c: float, lam: float):
        ease = b.ease(inter, c, lam)
        counts = b.popularity_counts(inter, c)
        mean_rate = counts["conversion"].sum() / max(counts["engagement"].sum(), 1.0)
        log_rate = np.log((counts["conversion"] + RATE_SMOOTHING * mean_rate) / (counts["engagement"] + RATE_SMOOTHING))

        def score(batch, task):
            s = ease(batch, task)
            return s + log_rate[None, :] * np.abs(s).mean(axis=1, keepdims=True)

        return score

    def tuned(make) -> float:
        lam, _ = b.choose_on_validation(make, lambdas, inter, cut, protocol)
        return grade(test, make(cut, lam), protocol)[METRIC]

    counts = b.popularity_counts(inter, cut)
    ease = tuned(lambda c, lam: b.ease(inter, c, lam))
    rows = [
        ("popularity", grade(test, constant(counts["engagement"]), protocol)[METRIC],
         grade(test, constant(counts["conversion"]), protocol)[METRIC]),
        ("EASE: engagement target vs conversion target", ease, tuned(conversion_ease)),
        ("EASE vs EASE + item conversion-rate prior", ease, tuned(ease_with_rate)),
    ]
    print(f"{args.dataset}, point-in-time {METRIC} on {len(test.queries[('conversion', POINT_IN_TIME)])} "
          "test conversions")
    print("| model | fit on engagements | with the conversion labels | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name, engagement, conversion in rows:
        print(f"| {name} | {engagement:.4f} | {conversion:.4f} | {conversion / engagement:.3f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
