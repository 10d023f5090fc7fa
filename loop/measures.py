"""Label and model freshness of a `convcg up` run: the labels topic's records and the model
registry turned into the inputs of ``loop.freshness`` (which does the arithmetic)."""

from __future__ import annotations

import json

from loop.freshness import (
    SendLog,
    ServedVersion,
    exact_percentiles,
    label_delays,
    model_delay_parts,
    model_delays,
)


def first_on_topic(records) -> list[tuple[float, float]]:
    """``(label_ts, first wall time on the topic)`` per label id (a redelivered label counts
    from its first copy); records are kafka-python ``ConsumerRecord``s of the labels topic."""
    first: dict[str, tuple[float, float]] = {}
    for rec in records:
        label = json.loads(rec.value)
        on_topic = rec.timestamp / 1000.0
        prev = first.get(label["label_id"])
        if prev is None or on_topic < prev[1]:
            first[label["label_id"]] = (float(label["label_ts"]), on_topic)
    return list(first.values())


def served_versions(registry, serving_since: dict[str, float], index_root=None) -> list[ServedVersion]:
    """Versions the retrieval service served, with their creation time, training data range,
    the start of the step that made them and their first index artifact's time (``index_root``:
    the refresher's artifacts, by default ``indexes/`` beside the versions)."""
    from registry.index_artifact import list_artifacts, read_manifest
    from registry.store import MANIFEST

    index_root = index_root if index_root is not None else registry.root / "indexes"
    out = []
    for version, since in serving_since.items():
        manifest = json.loads((registry.versions_dir / version / MANIFEST).read_text())
        data_range = registry.data_range(version)
        label_ts_max = data_range.get("label_ts_max")
        if label_ts_max is None:
            continue
        step_started = data_range.get("step_started_at")
        artifacts = [read_manifest(a).get("created_at") for a in list_artifacts(index_root, version)]
        written = min((float(t) for t in artifacts if t is not None), default=None)
        out.append(ServedVersion(version, float(manifest["created_at"]), float(label_ts_max), since,
                                 float(step_started) if step_started is not None else None, written))
    return out


def label_and_model_freshness(records, sends: SendLog, registry, serving_since: dict[str, float],
                              live_start: float, allowed_lateness_s: float | None = None) -> tuple[dict, dict]:
    """(label freshness, model freshness) percentiles in seconds over the live phase; model
    freshness carries ``parts``, the percentiles of each of its legs (``MODEL_FRESHNESS_PARTS``)."""
    if allowed_lateness_s is None:
        from streams.settings import StreamSettings

        allowed_lateness_s = StreamSettings().rules.allowed_lateness_s
    labels = first_on_topic(records)
    ld, never_due = label_delays(labels, sends, allowed_lateness_s)
    versions = served_versions(registry, serving_since)
    md, pending = model_delays(labels, versions, since_wall=live_start)
    parts = {name: {**exact_percentiles(values), "mean": round(sum(values) / len(values), 4) if values else None}
             for name, values in model_delay_parts(labels, versions, since_wall=live_start).items()}
    return ({**exact_percentiles(ld), "not_due_by_the_end": never_due},
            {**exact_percentiles(md), "not_yet_in_a_serving_model": pending, "parts": parts})
