"""`JoinStateChangelog`: the label join's per-partition state on its changelog topic.

The state of partition p is the impression states pending there (key: the impression id) and
its watermark (key ``__watermark__:p``); every value carries its partition (``"p"``). Entries
are written explicitly to partition p of the changelog of the Faust table ``STATE_TABLE``
(JSON key and value, as Faust's recovery decodes them; ``None`` is a tombstone), and a
partition's state is restored by reading that changelog partition from the broker to its end
(`streams.changelog_read`), not from the Faust table's recovered copy.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

STATE_TABLE = "join-state"
WATERMARK_KEY = "__watermark__:%d"


class JoinStateChangelog:
    def __init__(self, bootstrap: str, table: Any, output: Any) -> None:
        self.bootstrap = bootstrap
        self.table = table
        self.output = output
        self._topic: str | None = None

    @property
    def topic(self) -> str:
        if self._topic is None:
            self._topic = self.table.changelog_topic.get_topic_name()
        return self._topic

    def read(self, partition: int) -> dict:
        """The partition's entries as they are on the broker now (decoded keys and values)."""
        from streams.changelog_read import read_partition

        raw = read_partition(self.bootstrap, self.topic, partition)
        return {orjson.loads(k): (orjson.loads(v) if v is not None else None) for k, v in raw.items() if k}

    def restore(self, partition: int) -> tuple[list[dict], float]:
        """The pending impression states and the watermark of one partition."""
        states, wm = [], -math.inf
        for key, value in self.read(partition).items():
            if not value or value.get("p") != partition:
                continue
            if key == WATERMARK_KEY % partition:
                wm = value["wm"]
            else:
                states.append(value["s"])
        return states, wm

    @staticmethod
    def entries(partition: int, changed: dict, watermark: float) -> list[tuple[str, dict | None]]:
        """The entries recording a drain: each changed impression state (None: finished) and
        the partition's watermark."""
        out = [(imp_id, None if st is None else {"p": partition, "s": st.to_dict()}) for imp_id, st in changed.items()]
        out.append((WATERMARK_KEY % partition, {"p": partition, "wm": watermark}))
        return out

    def write(self, partition: int, key: str, value: dict | None) -> None:
        """Write one entry to the table and to its changelog partition; ``None`` is a tombstone."""
        if value is None:
            self.table.data.pop(key, None)
        else:
            self.table.data[key] = value
        self.output.send(self.topic, None if value is None else orjson.dumps(value), orjson.dumps(key), partition)
