"""`JoinStateChangelog`: the label join's per-partition state on its changelog topic.

The state of partition p is the impression states pending there (key: the impression id) and
its watermark (key ``__watermark__:p``); every value carries its partition (``"p"``). Entries
are written explicitly to partition p of the changelog of the Faust table ``STATE_TABLE``
(JSON key and value, as Faust's recovery decodes them; ``None`` is a tombstone), and a
partition's state is restored by reading that changelog partition from the broker to its end
(`streams.kafka.changelog_read`), not from the Faust table's recovered copy.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

STATE_TABLE = "join-state"
WATERMARK_KEY = "__watermark__:%d"


class JoinStateChangelog:
    def __init__(self, bootstrap: str, table: Any, output: Any, restore_timeout_s: float = 120.0) -> None:
        self.bootstrap = bootstrap
        self.restore_timeout_s = restore_timeout_s
        self.table = table
        self.output = output
        self._topic: str | None = None

    @property
    def topic(self) -> str:
        if self._topic is None:
            self._topic = self.table.changelog_topic.get_topic_name()
        return self._topic

    def read_raw(self, partition: int) -> dict[bytes, bytes | None]:
        """The partition's changelog as it is on the broker now: the last bytes per key."""
        from streams.kafka.changelog_read import read_partition

        return read_partition(self.bootstrap, self.topic, partition, self.restore_timeout_s)

    def restore(self, partition: int) -> tuple[list[dict], float]:
        """The pending impression states and the watermark of one partition."""
        return restore_entries(partition, self.read_raw(partition))

    @staticmethod
    def entries(partition: int, changed: dict, watermark: float) -> list[tuple[str, dict | None]]:
        """The entries recording a drain: each changed impression state (None: finished) and
        the partition's watermark. A watermark that has not moved yet (-inf) is not written:
        JSON has no infinity, and a restore without one starts at -inf anyway."""
        out = [(imp_id, None if st is None else {"p": partition, "s": st.to_dict()}) for imp_id, st in changed.items()]
        if math.isfinite(watermark):
            out.append((WATERMARK_KEY % partition, {"p": partition, "wm": watermark}))
        return out

    def write(self, partition: int, key: str, value: dict | None) -> None:
        """Write one entry to the table and to its changelog partition; ``None`` is a tombstone."""
        if value is None:
            self.table.data.pop(key, None)
        else:
            self.table.data[key] = value
        self.output.send(self.topic, None if value is None else orjson.dumps(value), orjson.dumps(key), partition)


def restore_entries(partition: int, raw: dict[bytes, bytes | None]) -> tuple[list[dict], float]:
    """The pending impression states and the watermark of ``partition`` from its changelog's
    bytes (the last value per key, as `streams.kafka.changelog_read.read_partition` returns them). A
    watermark stored as ``null`` (written as -inf by earlier versions) restores as -inf."""
    states, wm = [], -math.inf
    watermark_key = WATERMARK_KEY % partition
    for k, v in raw.items():
        if not k or v is None:
            continue
        key, value = orjson.loads(k), orjson.loads(v)
        if not value or value.get("p") != partition:
            continue
        if key == watermark_key:
            wm = -math.inf if value.get("wm") is None else float(value["wm"])
        else:
            states.append(value["s"])
    return states, wm
