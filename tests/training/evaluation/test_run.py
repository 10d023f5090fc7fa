"""The eval run's bookkeeping: the named models, mean and std over seeds, the table."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluation.protocol import HEADLINE, REPORTED_METRICS
from training.learn.recipes import retriever_config
from training.evaluation.run import (
    model_variants,
    summarize,
    table,
)


def test_variants_name_the_retriever_the_engagement_model_and_ablations():
    names = list(model_variants(retriever_config()))
    assert names[:2] == ["conversion_retriever", "engagement_two_tower"]
    assert all(n.startswith("ablation: ") for n in names[2:]) and len(names) > 2
    assert list(model_variants(retriever_config(), ablations=False)) == names[:2]
    engagement, row_filter, _ = model_variants(retriever_config())["engagement_two_tower"]
    assert engagement.loss.conversion_weight == 0 and row_filter is not None
    # nothing conversion-specific is left in it, and the rest is the retriever's architecture
    assert engagement.loss.advertiser_weight == 0 and not engagement.conversion_item_bias
    assert retriever_config().conversion_item_bias
    assert engagement.sequence == retriever_config().sequence and engagement.embedding_dim == retriever_config().embedding_dim


def test_summary_is_mean_and_sample_std_over_runs():
    runs = {"m": [{k: 0.5 for k in REPORTED_METRICS}, {k: 0.7 for k in REPORTED_METRICS}],
            "one": [{k: 0.25 for k in REPORTED_METRICS}]}
    summary = summarize(runs)
    assert summary["m"][HEADLINE]["mean"] == pytest.approx(0.6)
    assert summary["m"][HEADLINE]["std"] == pytest.approx(0.1414, abs=1e-4)
    assert summary["one"][HEADLINE] == {"mean": 0.25, "std": 0.0}
    text = table(summary)
    assert "| m | 0.6000 ± 0.1414" in text and "| one | 0.2500 |" in text


def test_paired_differences_and_verdicts_per_reference_direction():
    from training.evaluation.run import paired_differences, reference_verdicts, verdict_table

    users = np.repeat(np.arange(200), 5)
    rng = np.random.default_rng(0)
    retriever = (rng.random(1000) < 0.6).astype(float)
    worse = retriever * (rng.random(1000) < 0.7)  # loses some of the retriever's hits
    hits = {"conversion_retriever": [retriever, retriever], "ablation: separate heads": [worse],
            "ablation: no hard negatives": [retriever], "popularity": [worse]}
    paired = paired_differences(hits, users)
    assert set(paired) == {"ablation: separate heads", "ablation: no hard negatives", "popularity"}
    verdicts = reference_verdicts(paired)
    assert verdicts["unified > separate heads"]["verdict"] == "reproduced"
    assert verdicts["hard negatives help"]["verdict"] == "not reproduced (within noise)"
    assert "parallel > sequential" not in verdicts  # not run, so no verdict
    assert "reproduced" in verdict_table(verdicts)
    assert paired_differences({"popularity": [worse]}, users) == {}
