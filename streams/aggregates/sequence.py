"""A user's engagement sequence as the streaming aggregates keep it (pure, no I/O).

The sequence is the one the point-in-time protocol reads (``training.history.Interactions.
engagements``): the *first* engagement per (impression, item) (earliest event time, then
smallest event id), every one of them (an item engaged from two impressions is there twice: no
dedupe of items), ordered by (ts, item id, impression id), the newest ``last_n`` kept. A later
engagement of an (impression, item) is left out of the sequence (it still counts in the
windows). The aggregators remember each pair's first engagement beside the event ids for the
dedupe horizon (``engaged_key``), so two engagements of one impression further apart than that
would both be in it. A reader keeps the entries strictly before its query time
(``model.encoding.recent_sequences``).
"""

from __future__ import annotations

#: prefix of the (impression, item) keys remembered beside the event ids (no event id starts so)
ENGAGED_PREFIX = "\x00engaged\x1f"


def engaged_key(impression_id: str, item_id: str) -> str:
    """The seen-set key of an (impression, item) pair's first engagement."""
    return f"{ENGAGED_PREFIX}{impression_id}\x1f{item_id}"


def recent_entry(ts: float, item_id: str, dwell_ms: float, impression_id: str, event_id: str) -> list:
    return [ts, item_id, dwell_ms, impression_id, event_id]


def _order(entry: list) -> tuple:
    return entry[0], entry[1], entry[3]  # ts, item id, impression id


def insert_recent(recent: list[list], entry: list, n: int) -> None:
    """Keep ``recent`` = [[ts, item_id, dwell_ms, impression_id, event_id], ...] newest first by
    (ts, item id, impression id), at most ``n``; of two engagements of one (impression, item)
    the first (earliest ts, then smallest event id) stays. The same entry again changes nothing."""
    ts, item_id, _, impression_id, event_id = entry
    for k, old in enumerate(recent):
        if old[1] == item_id and old[3] == impression_id:
            if (old[0], old[4]) <= (ts, event_id):
                return
            del recent[k]
            break
    order = _order(entry)
    k = 0
    while k < len(recent) and _order(recent[k]) > order:
        k += 1
    if k < n:
        recent.insert(k, list(entry))
        del recent[n:]


def legacy_recent(recent: list[list]) -> list[list]:
    """Entries restored from a changelog written before dwell and impression were kept
    (``[ts, item]``) in today's shape."""
    return [e if len(e) == 5 else recent_entry(float(e[0]), e[1], 0.0, "", "") for e in recent]


def recent_features(recent: list[list] | tuple) -> dict[str, list]:
    """The user's sequence features (``convcg.contract.RECENT_SEQUENCE_FEATURES``), newest
    first, the same order and length in all three."""
    return {"last_engaged_items": [e[1] for e in recent], "last_engaged_ts": [float(e[0]) for e in recent],
            "last_engaged_dwell_ms": [float(e[2]) for e in recent]}
