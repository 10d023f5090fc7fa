"""`EventLog`: a finite, event-time-ordered log of impressions, engagements and conversions,
with the item catalog it refers to; plus its JSONL form (one event per line).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import orjson
import pandas as pd

from convcg.contract import (
    EVENT_CLASSES,
    Conversion,
    Engagement,
    Event,
    Impression,
    event_to_dict,
    event_type_of,
)

#: Order of event types sharing one timestamp: an impression precedes its engagement,
#: which precedes a conversion.
EVENT_TYPE_RANK: dict[type, int] = {Impression: 0, Engagement: 1, Conversion: 2}

CATALOG_COLUMNS: tuple[str, ...] = ("item_id", "advertiser_id", "category", "price")
UNKNOWN_CATEGORY = "unknown"
EVENT_TYPE_FIELD = "event_type"


def event_sort_key(event: Event) -> tuple[float, int, str]:
    return (event.ts, EVENT_TYPE_RANK[type(event)], event.event_id)


def sort_events(events: list[Event]) -> list[Event]:
    """Sort in place by (ts, type rank impression<engagement<conversion, event_id)."""
    events.sort(key=event_sort_key)
    return events


def empty_catalog() -> pd.DataFrame:
    return make_catalog([], [], [], [])


def make_catalog(item_ids: Iterable[str], advertiser_ids: Iterable[str], categories: Iterable[str],
                 prices: Iterable[float]) -> pd.DataFrame:
    """A catalog frame with the canonical columns and dtypes (price NaN when unknown)."""
    return pd.DataFrame({
        "item_id": pd.Series(list(item_ids), dtype=object),
        "advertiser_id": pd.Series(list(advertiser_ids), dtype=object),
        "category": pd.Series(list(categories), dtype=object),
        "price": pd.Series(list(prices), dtype=np.float64),
    })


@dataclass
class EventLog:
    """Events sorted by (ts, type rank, event_id) and the catalog of the items they name."""

    name: str
    events: list[Event]
    catalog: pd.DataFrame = field(default_factory=empty_catalog)

    def __len__(self) -> int:
        return len(self.events)

    def counts(self) -> dict[str, int]:
        """Number of events by type ({impression, engagement, conversion} -> n)."""
        out = {"impression": 0, "engagement": 0, "conversion": 0}
        for e in self.events:
            out[event_type_of(e)] += 1
        return out

    def head(self, n: int) -> "EventLog":
        """The first ``n`` events in event-time order (the catalog is kept whole)."""
        return EventLog(name=self.name, events=self.events[:n], catalog=self.catalog)


# --- JSONL --------------------------------------------------------------------------------------


def event_to_json_line(event: Event) -> bytes:
    d = event_to_dict(event)
    d[EVENT_TYPE_FIELD] = event_type_of(event)
    return orjson.dumps(d)


def event_from_dict(d: dict) -> Event:
    """Build an event from its JSON object (with ``event_type``); raises ValueError if bad."""
    kind = d.get(EVENT_TYPE_FIELD)
    cls = EVENT_CLASSES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown {EVENT_TYPE_FIELD} {kind!r} (want one of {sorted(EVENT_CLASSES)})")
    fields = {k: v for k, v in d.items() if k != EVENT_TYPE_FIELD}
    try:
        return cls(**fields)
    except TypeError as exc:
        raise ValueError(f"bad {kind} event: {exc}") from None


def write_jsonl(log: EventLog, path: str | Path) -> Path:
    """Write the log's events as JSON lines (each with an ``event_type`` field)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        for e in log.events:
            f.write(event_to_json_line(e))
            f.write(b"\n")
    return path


def catalog_from_events(events: Iterable[Event]) -> pd.DataFrame:
    """The catalog implied by events alone: advertiser from impressions/conversions, category
    unknown, price NaN."""
    advertiser: dict[str, str] = {}
    for e in events:
        if not isinstance(e, Engagement):
            advertiser.setdefault(e.item_id, e.advertiser_id)
    items = sorted(advertiser)
    return make_catalog(items, [advertiser[i] for i in items], [UNKNOWN_CATEGORY] * len(items),
                        [np.nan] * len(items))


def read_jsonl(path: str | Path, name: str | None = None) -> EventLog:
    """Read a JSONL event log; errors name the line. Events are re-sorted into log order."""
    path = Path(path)
    events: list[Event] = []
    with path.open("rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                events.append(event_from_dict(orjson.loads(line)))
            except (orjson.JSONDecodeError, ValueError) as exc:
                raise ValueError(f"{path}:{lineno}: {exc}") from None
    sort_events(events)
    return EventLog(name=name or path.stem, events=events, catalog=catalog_from_events(events))
