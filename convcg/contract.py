"""The wire contract between components (see ../shared/DESIGN.md).

Components meet only at Kafka topics, the Feast store and the model registry. This module
names the topics and fixes the shape of what travels on them, so that every component reads
and writes the same thing. It is deliberately free of I/O and heavy imports.

Wire format: UTF-8 JSON objects. Every event and label message is keyed by ``user_id`` so the
three event topics and the label topic are co-partitioned: all of a user's events land in the
same partition number of every topic, which keeps the label join local to one partition.
Timestamps (``ts``, ``impression_ts``, ``label_ts``, ``event_ts``) are event time in float
seconds since the Unix epoch (UTC).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal

import msgspec

# --- topics -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topics:
    """Topic names; one instance per deployment (a prefix isolates test runs)."""

    prefix: str = ""

    def _t(self, name: str) -> str:
        return f"{self.prefix}{name}"

    @property
    def impressions(self) -> str:
        return self._t("impressions")

    @property
    def engagements(self) -> str:
        return self._t("engagements")

    @property
    def conversions(self) -> str:
        return self._t("conversions")

    @property
    def labels(self) -> str:
        return self._t("labels")

    @property
    def feature_updates(self) -> str:
        return self._t("feature-updates")

    @property
    def dead_letters(self) -> str:
        return self._t("dead-letters")

    @property
    def unattributed(self) -> str:
        """Conversions that could not be attributed (late, unknown impression...), with reason."""
        return self._t("unattributed-conversions")

    @property
    def events(self) -> tuple[str, str, str]:
        return (self.impressions, self.engagements, self.conversions)

    # `convcg aggregates`: events re-keyed by item / advertiser between its stages, and each
    # stage's state (compacted: see ``COMPACTED_SUFFIX``)
    @property
    def aggregates_by_item(self) -> str:
        return self._t("aggregates-by-item")

    @property
    def aggregates_by_advertiser(self) -> str:
        return self._t("aggregates-by-advertiser")

    def aggregates_changelog(self, stage: str) -> str:
        """The changelog of one aggregates stage (``user``, ``item`` or ``advertiser``)."""
        if stage not in ENTITIES:
            raise ValueError(f"unknown aggregates stage {stage!r}")
        return self._t(f"aggregates-{stage}{COMPACTED_SUFFIX}")

    @property
    def aggregates(self) -> tuple[str, ...]:
        return (self.aggregates_by_item, self.aggregates_by_advertiser,
                *(self.aggregates_changelog(e) for e in ENTITIES))

    def of_event(self, event: "Event") -> str:
        """The topic an event is read from."""
        return {"impression": self.impressions, "engagement": self.engagements,
                "conversion": self.conversions}[event_type_of(event)]

    def all(self) -> tuple[str, ...]:
        return (*self.events, self.labels, self.feature_updates, self.dead_letters, self.unattributed,
                *self.aggregates)


#: topics named so hold state (last value per key) and are created compacted
COMPACTED_SUFFIX = "-changelog"


EVENT_TYPES = ("impression", "engagement", "conversion")
EventType = Literal["impression", "engagement", "conversion"]

SURFACES = ("home", "search", "related")
ENGAGEMENT_TYPES = ("click", "save", "closeup", "add_to_cart")
CONVERSION_TYPES = ("checkout", "add_to_cart")

# --- events ---------------------------------------------------------------------------------
#
# Events are msgspec Structs: `convcg.validation` decodes a record straight into one, and the
# field types below are the checks made while decoding (a non-empty string, a known surface, a
# non-negative position...). ``event_type`` is the tag: a record may declare it, and then it must
# name the topic's type. ``gc=False``: an event holds only strings and numbers, so the garbage
# collector never needs to scan it (the join holds many).

NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]
#: event time is after the Unix epoch (seconds); how far ahead of now is checked by the reader
EventTime = Annotated[float, msgspec.Meta(gt=0)]
#: a non-negative JSON integer (within int64: larger ones are left to the detailed checks)
Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Surface = Literal[SURFACES]  # type: ignore[valid-type]
EngagementType = Literal[ENGAGEMENT_TYPES]  # type: ignore[valid-type]
ConversionType = Literal[CONVERSION_TYPES]  # type: ignore[valid-type]


class Impression(msgspec.Struct, gc=False, tag_field="event_type", tag="impression"):
    event_id: NonEmptyStr
    impression_id: NonEmptyStr
    ts: EventTime
    user_id: NonEmptyStr
    item_id: NonEmptyStr
    advertiser_id: NonEmptyStr
    surface: Surface
    position: Count


class Engagement(msgspec.Struct, gc=False, tag_field="event_type", tag="engagement"):
    event_id: NonEmptyStr
    impression_id: NonEmptyStr
    ts: EventTime
    user_id: NonEmptyStr
    item_id: NonEmptyStr
    type: EngagementType
    dwell_ms: Count


class Conversion(msgspec.Struct, gc=False, tag_field="event_type", tag="conversion"):
    event_id: NonEmptyStr
    ts: EventTime
    user_id: NonEmptyStr
    item_id: NonEmptyStr
    advertiser_id: NonEmptyStr
    type: ConversionType
    value: NonNegative
    impression_id: NonEmptyStr | None = None


Event = Impression | Engagement | Conversion

EVENT_CLASSES: dict[str, type] = {
    "impression": Impression,
    "engagement": Engagement,
    "conversion": Conversion,
}


def event_type_of(event: Event) -> EventType:
    if isinstance(event, Impression):
        return "impression"
    if isinstance(event, Engagement):
        return "engagement"
    return "conversion"


def event_to_dict(event: Event) -> dict[str, Any]:
    """The event's JSON object (without the ``event_type`` tag, as producers write it)."""
    d = msgspec.structs.asdict(event)
    if isinstance(event, Conversion) and d.get("impression_id") is None:
        d.pop("impression_id")
    return d


def replace_event(event: Event, **changes: Any) -> Event:
    """A copy of ``event`` with some fields changed."""
    return msgspec.structs.replace(event, **changes)


# --- labels ---------------------------------------------------------------------------------

LabelKind = Literal["engagement", "conversion", "negative", "correction"]
LABEL_KINDS: tuple[str, ...] = ("engagement", "conversion", "negative", "correction")


class Label(msgspec.Struct, gc=False):
    """One labelling decision (append-only). ``label_id`` is deterministic, so a label
    re-emitted after a crash has the same id and consumers deduplicate on it. Its JSON form
    is `encode_label`'s."""

    label_id: str
    impression_id: str
    user_id: str
    item_id: str
    advertiser_id: str
    surface: str
    impression_ts: float
    label_ts: float
    kind: str
    conversion: int = 0
    conversion_value: float = 0.0
    engagement: int = 0
    engagement_weight: float = 0.0
    position: int = 0

    def to_dict(self) -> dict[str, Any]:
        return msgspec.structs.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Label":
        return cls(**{k: d[k] for k in LABEL_FIELDS if k in d})


#: the label topic's JSON encoding (field order as declared)
encode_label = msgspec.json.Encoder().encode

LABEL_FIELDS: tuple[str, ...] = Label.__struct_fields__


def label_id(impression_id: str, kind: str, cause_event_id: str | None = None) -> str:
    """Deterministic id of a label: at most one engagement / negative per impression, one
    conversion or correction per (impression, conversion event)."""
    return f"{impression_id}:{kind}" if cause_event_id is None else f"{impression_id}:{kind}:{cause_event_id}"


# --- feature updates ------------------------------------------------------------------------

Entity = Literal["user", "item", "advertiser"]
ENTITIES: tuple[str, ...] = ("user", "item", "advertiser")

WINDOWS: tuple[str, ...] = ("1h", "1d", "7d")
WINDOW_SECONDS: dict[str, int] = {"1h": 3600, "1d": 86400, "7d": 7 * 86400}
COUNTED: tuple[str, ...] = ("impressions", "engagements", "conversions")


def count_feature_names() -> list[str]:
    return [f"{what}_{w}" for what in COUNTED for w in WINDOWS]


#: Streaming aggregate features per entity, as written into Feast (see features/).
#: ``ctr_7d`` and ``cvr_7d`` are Beta-smoothed rates over the 7-day window.
#: ``last_engaged_items`` / ``last_engaged_ts`` / ``last_engaged_dwell_ms`` (user only) are the
#: user's last N engagements, newest first, in one order and length: item ids, event times
#: (seconds) and dwells (ms); the first engagement per (impression, item), as the point-in-time
#: training data reads them (``streams.aggregates``).
RECENT_SEQUENCE_FEATURES: tuple[str, ...] = ("last_engaged_items", "last_engaged_ts", "last_engaged_dwell_ms")
#: how many engagements the streaming aggregates keep in those lists by default, and so the
#: longest sequence the online trainer's model reads (``training.learn.recipes.online_model_config``):
#: a model reading more than the store keeps would be trained on history it never gets served.
#: 200, as the retriever was chosen with: the online trainer's replay (``bench.experiments.trainer_replay
#: --limit 0 --steps 1``) reached 0.664 with 200 against 0.634 with 50, for ~5-10% more CPU per
#: event in the aggregates and the sink (``bench.perf.pipeline_cpu``)
RECENT_SEQUENCE_LENGTH = 200
STREAM_FEATURES: dict[str, list[str]] = {
    "user": count_feature_names() + ["ctr_7d", "cvr_7d", *RECENT_SEQUENCE_FEATURES],
    "item": count_feature_names() + ["ctr_7d", "cvr_7d"],
    "advertiser": count_feature_names() + ["ctr_7d", "cvr_7d"],
}


@dataclass(slots=True)
class FeatureUpdate:
    """The newest value of one entity's streaming aggregates.

    ``event_ts``: event time the values are as of (the latest event that changed them).
    ``ingest_ms``: Kafka timestamp (ms) of the newest event that went into this update, so the
    store can measure event-entered-Kafka to visible-online freshness.
    """

    entity: str
    entity_id: str
    event_ts: float
    ingest_ms: int
    features: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- dead letters ---------------------------------------------------------------------------

#: components that write to the dead-letter topic (``DeadLetter.component``)
DEAD_LETTER_COMPONENTS: tuple[str, ...] = ("streams-worker", "features-sink", "trainer")


@dataclass(slots=True)
class DeadLetter:
    """A record a component could not use, on the dead-letter topic (one shape for every writer).

    ``reason`` is a short machine tag (what ``convcg deadletters`` groups by), ``detail`` the
    human message; ``original_b64`` the record's bytes as read; ``offset`` is -1 when the record
    was not read from a topic as such (an event the join dropped)."""

    component: str
    topic: str
    partition: int
    offset: int
    reason: str
    detail: str
    original_b64: str
    rejected_at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- operational metrics ----------------------------------------------------------------------

class MetricNames:
    """Prometheus metrics that other processes read (the whole-loop supervisor paces itself by
    them, operators alert on them): their names are part of the contract. Counters are
    exposed as ``<name>_total``."""

    EVENTS_JOINED = "convcg_stream_events"  # valid events the label join consumed, by type
    LABELS_EMITTED = "convcg_stream_labels"  # labels the label join emitted, by kind
    EVENTS_AGGREGATED = "convcg_aggregates_events"  # valid events counted into the feature aggregates
    LABELS_TRAINED_ON = "convcg_trainer_labels_consumed"  # new labels the trainer accepted
    LABELS_REDELIVERED = "convcg_trainer_labels_duplicate"  # redelivered labels the trainer ignored
    TRAINER_PENDING = "convcg_trainer_pending_labels"  # gauge: labels waiting for the next step
    TRAINER_STEPPING = "convcg_trainer_step_running"  # gauge: 1 while a training step runs
    TRAINER_RETRAINING = "convcg_trainer_retraining"  # gauge: 1 while a retrain runs in the background
    INDEX_SWAPS = "convcg_retrieval_swaps"  # serving pair swaps by kind
    USER_FEATURE_READS = "convcg_retrieval_feature_lookup_seconds"  # histogram: a query's user-feature read
    USER_FEATURE_READ_FAILURES = "convcg_retrieval_feature_lookup_failures"  # reads that failed (served without)
    FEATURE_FRESHNESS = "convcg_features_freshness_seconds"  # histogram: event in Kafka -> online

    @staticmethod
    def total(counter: str) -> str:
        return f"{counter}_total"
