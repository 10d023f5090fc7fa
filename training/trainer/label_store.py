"""The trainer's own copy of the labels it consumed: parquet parts in a folder.

It is the replay pool for fine-tuning and lets a restarted trainer know which ``label_id``s
it has already seen (the labels topic is at-least-once).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

log = logging.getLogger(__name__)
#: the labels-topic partition each label was read from: stored beside it so a restarted reader
#: restores each partition's dedupe horizon; not part of the labels ``load`` returns
PARTITION_COLUMN = "topic_partition"


class LabelStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def parts(self) -> list[Path]:
        return sorted(self.root.glob("part-*.parquet")) if self.root.is_dir() else []

    def load(self) -> pd.DataFrame:
        parts = self.parts()
        if not parts:
            return pd.DataFrame()
        frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
        frame = frame.drop(columns=[PARTITION_COLUMN], errors="ignore")
        return frame.drop_duplicates("label_id", keep="first").reset_index(drop=True)

    def recent_label_ids(self, horizon_s: float) -> list[tuple[int | None, str, float]]:
        """(partition, label_id, label_ts) of the stored labels within ``horizon_s`` of event
        time of the newest one: the ids a restarted reader must still recognise as
        redeliveries, and where each was read (None: a part stored without it)."""
        frames = []
        for p in self.parts():
            names = set(pq.read_schema(p).names)
            frame = pd.read_parquet(p, columns=["label_id", "label_ts", *([PARTITION_COLUMN] if PARTITION_COLUMN in names else [])])
            frames.append(frame if PARTITION_COLUMN in frame else frame.assign(**{PARTITION_COLUMN: None}))
        if not frames:
            return []
        frame = pd.concat(frames, ignore_index=True)
        recent = frame[frame["label_ts"] >= frame["label_ts"].max() - horizon_s]
        partitions = [None if pd.isna(x) else int(x) for x in recent[PARTITION_COLUMN].tolist()]
        return list(zip(partitions, recent["label_id"].tolist(), recent["label_ts"].astype(float).tolist()))

    def append(self, labels: pd.DataFrame) -> Path | None:
        """Write one part atomically (temp file + rename)."""
        if len(labels) == 0:
            return None
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"part-{time.time_ns():020d}-{os.getpid()}.parquet"
        tmp = self.root / f".{name}.tmp"
        labels.to_parquet(tmp, index=False)
        os.replace(tmp, self.root / name)
        log.info("stored %d labels in %s", len(labels), name)
        return self.root / name
