"""An independent, brute-force statement of the label rules over a whole log.

Written from the contract in DESIGN.md, without the streaming machinery (no buffer, timers or
watermark): the worker's output is checked against this, not against its own code.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from convcg.contract import Conversion, Engagement, Impression
from streams.label_join.rules import LabelRules


def reference_label_ids(events, rules: LabelRules) -> dict[str, str]:
    """label_id -> kind for every decision the log implies once every window has closed."""
    imps = {e.impression_id: e for e in events if isinstance(e, Impression)}
    first_eng: dict[str, float] = {}
    for e in events:
        if isinstance(e, Engagement):
            imp = imps.get(e.impression_id)
            if imp is None or (imp.user_id, imp.item_id) != (e.user_id, e.item_id) or e.ts < imp.ts:
                continue
            first_eng[e.impression_id] = min(first_eng.get(e.impression_id, e.ts), e.ts)

    def in_window(imp, ts):
        return imp.ts <= ts <= imp.ts + rules.attribution_window_s

    attributed: dict[str, list[Conversion]] = defaultdict(list)
    for c in (e for e in events if isinstance(e, Conversion)):
        if c.impression_id:
            imp = imps.get(c.impression_id)
            if imp and (imp.user_id, imp.item_id) == (c.user_id, c.item_id) and in_window(imp, c.ts):
                attributed[imp.impression_id].append(c)
            continue
        best = None
        for imp_id, eng_ts in first_eng.items():
            imp = imps[imp_id]
            if (imp.user_id, imp.item_id) == (c.user_id, c.item_id) and eng_ts <= c.ts and in_window(imp, c.ts):
                if best is None or (eng_ts, imp_id) > best:
                    best = (eng_ts, imp_id)
        if best:
            attributed[best[1]].append(c)

    out: dict[str, str] = {}
    for imp_id, imp in imps.items():
        deadline = imp.ts + rules.negative_window_s
        convs = {c.event_id: c for c in attributed.get(imp_id, [])}.values()
        engaged_in_time = imp_id in first_eng and first_eng[imp_id] <= deadline
        converted_in_time = any(c.ts <= deadline for c in convs)
        negative = not engaged_in_time and not converted_in_time
        if imp_id in first_eng:
            out[f"{imp_id}:engagement"] = "engagement"
        if negative:
            out[f"{imp_id}:negative"] = "negative"
        for c in convs:
            kind = "correction" if negative and c.ts > deadline else "conversion"
            out[f"{imp_id}:{kind}:{c.event_id}"] = kind
    return out


def counts(label_kinds: dict[str, str]) -> Counter:
    return Counter(label_kinds.values())
