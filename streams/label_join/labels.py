"""Reading the label topic as a consumer should: deduplicated on the deterministic label_id.

The label topic is at-least-once: after a crash a label may be re-sent, always with the same
``label_id``. Every consumer keeps the first copy.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from convcg.contract import LABEL_KINDS


def dedupe(labels: Iterable[dict]) -> list[dict]:
    seen: set[str] = set()
    out = []
    for label in labels:
        lid = label["label_id"]
        if lid not in seen:
            seen.add(lid)
            out.append(label)
    return out


def count_by_kind(labels: Iterable[dict]) -> dict[str, int]:
    c = Counter(label["kind"] for label in labels)
    return {k: c.get(k, 0) for k in LABEL_KINDS}
