"""The Feast repo, defined in code (no feature_store.yaml / repo folder to keep in sync).

- entities ``user`` / ``item`` / ``advertiser`` (join keys ``user_id`` / ``item_id`` /
  ``advertiser_id``);
- one ``PushSource`` + ``StreamFeatureView`` per entity for the streaming aggregates named in
  ``convcg.contract.STREAM_FEATURES`` (view ``<entity>_stream``, push source
  ``<entity>_push``); the push source's batch source is a directory of parquet part files
  written by the sink, with an ingestion timestamp column ``created`` beside the event
  timestamp (see ``features.dataset`` for why);
- a batch ``FeatureView`` ``item_catalog`` over the catalog parquet (item -> advertiser,
  category, price).

Names and types here are pure data (``stream_feature_schema``) so they can be tested and shared
without importing Feast; ``build_definitions`` imports Feast lazily.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from convcg.contract import ENTITIES, STREAM_FEATURES

EVENT_TIMESTAMP = "event_timestamp"
CREATED_TIMESTAMP = "created"

JOIN_KEYS: dict[str, str] = {e: f"{e}_id" for e in ENTITIES}
CATALOG_VIEW = "item_catalog"
CATALOG_FEATURES: dict[str, str] = {"advertiser_id": "string", "category": "string", "price": "float"}
#: entity of each feature view, and the prefix its columns get in a training set
VIEW_ENTITY: dict[str, str] = {**{f"{e}_stream": e for e in ENTITIES}, CATALOG_VIEW: "item"}


def stream_view_name(entity: str) -> str:
    return f"{entity}_stream"


def push_source_name(entity: str) -> str:
    return f"{entity}_push"


#: list-valued streaming features and their logical type
LIST_FEATURES: dict[str, str] = {"last_engaged_items": "strings", "last_engaged_ts": "floats",
                                 "last_engaged_dwell_ms": "floats"}
LIST_KINDS = ("strings", "floats")


def feature_kind(name: str) -> str:
    """Logical type of a streaming feature: ``int`` counts, ``float`` rates, ``strings`` /
    ``floats`` lists (Feast ``Array(String)`` / ``Array(Float64)``)."""
    if name in LIST_FEATURES:
        return LIST_FEATURES[name]
    if name.startswith(("ctr_", "cvr_")):
        return "float"
    return "int"


def stream_feature_schema(entity: str) -> dict[str, str]:
    return {name: feature_kind(name) for name in STREAM_FEATURES[entity]}


def view_features(view: str) -> dict[str, str]:
    """Feature name -> logical type for any feature view of this repo (KeyError if unknown)."""
    if view == CATALOG_VIEW:
        return dict(CATALOG_FEATURES)
    entity = VIEW_ENTITY[view]
    return stream_feature_schema(entity)


def _feast_type(kind: str):
    from feast.types import Array, Float64, Int64, String

    return {"int": Int64, "float": Float64, "string": String, "strings": Array(String),
            "floats": Array(Float64)}[kind]


def build_definitions(offline_root: Path, catalog_path: Path, ttl_days: float) -> list[Any]:
    """All Feast objects of the repo, ready for ``FeatureStore.apply``."""
    import warnings

    from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
    from feast.stream_feature_view import StreamFeatureView
    from feast.types import String

    ttl = timedelta(days=ttl_days)
    objects: list[Any] = []
    entities = {}
    for e in ENTITIES:
        entities[e] = Entity(name=e, join_keys=[JOIN_KEYS[e]], value_type=ValueType.STRING,
                             description=f"a {e}")
        objects.append(entities[e])
    for e in ENTITIES:
        batch = FileSource(
            name=f"{e}_stream_offline",
            path=str(Path(offline_root).absolute() / stream_view_name(e)),
            timestamp_field=EVENT_TIMESTAMP,
            created_timestamp_column=CREATED_TIMESTAMP,
        )
        push = PushSource(name=push_source_name(e), batch_source=batch)
        schema = [Field(name=JOIN_KEYS[e], dtype=String)] + [
            Field(name=n, dtype=_feast_type(k)) for n, k in stream_feature_schema(e).items()]
        with warnings.catch_warnings():  # "stream feature views are experimental"
            warnings.simplefilter("ignore", RuntimeWarning)
            view = StreamFeatureView(
                name=stream_view_name(e), entities=[entities[e]], source=push, schema=schema,
                ttl=ttl, online=True, timestamp_field=EVENT_TIMESTAMP,
                description=f"streaming aggregates per {e} (written by the features sink)")
        objects += [push, view]
    catalog = FileSource(name="item_catalog_source", path=str(Path(catalog_path).absolute()),
                         timestamp_field=EVENT_TIMESTAMP)
    objects += [catalog, FeatureView(
        name=CATALOG_VIEW, entities=[entities["item"]], source=catalog, ttl=timedelta(0),
        schema=[Field(name=JOIN_KEYS["item"], dtype=String)]
        + [Field(name=n, dtype=_feast_type(k)) for n, k in CATALOG_FEATURES.items()],
        description="item catalog: advertiser, category, price")]
    return objects
