"""Grading: the one function every figure of retrieval quality goes through (``grade``), and a
trained two-tower model as a point-in-time ``Scorer``.

The trainer's quality gate (``training.evaluation.heldout``), ``convcg eval``
(``training.evaluation.run``), the ``convcg up`` report, the early stopping of a convergence run,
the baselines' validation choices and the experiments under ``bench/`` all call ``grade``; the
names of its figures are ``training.evaluation.protocol.metric_name``'s.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from model.encoding import encode_items
from model.towers import TwoTowerModel
from training.evaluation.protocol import EvaluationSet, Scorer
from training.evaluation.settings import ProtocolSettings
from training.history import QueryBatch
from training.learn.sequences import SequenceFeatures, catalog_frame

#: (task, protocol) -> each query's 0-based rank of its positive
Ranks = dict[tuple[str, str], np.ndarray]


def grade_with_ranks(evaluation: EvaluationSet, scorer: Scorer,
                     settings: ProtocolSettings) -> tuple[dict[str, float], Ranks]:
    """``grade``'s figures and the ranks they were counted from (for paired comparisons)."""
    ranks = evaluation.ranks(scorer, settings)
    return evaluation.metrics(ranks, settings), ranks


def grade(evaluation: EvaluationSet, scorer: Scorer, settings: ProtocolSettings) -> dict[str, float]:
    """Recall@``settings.ks`` of ``scorer`` on every query set of ``evaluation`` (each task and
    protocol; all users, cold and warm), named by ``protocol.metric_name``."""
    return grade_with_ranks(evaluation, scorer, settings)[0]


def model_scorer(model: TwoTowerModel, features: SequenceFeatures, items: pd.DataFrame | None = None) -> Scorer:
    """Scores the items (``items``, in ``features.inter``'s order; default its catalog) for a
    ``QueryBatch``: its sequence as of each query's time, by the inner product of the model's
    retrieval vectors (the index's ranking)."""
    model.eval()
    with torch.no_grad():
        encoded = encode_items(catalog_frame(features.inter) if items is None else items, model.config)
        item_vectors = {task: model.item_vectors(encoded, task).numpy() for task in ("conversion", "engagement")}

    def score(batch: QueryBatch, task: str) -> np.ndarray:
        with torch.no_grad():
            return model.query_vectors(features.for_batch(batch), task).numpy() @ item_vectors[task].T

    return score
