"""The stable mapping between catalog item ids (strings) and FAISS ids (int64).

An item's FAISS id is a 63-bit hash of its item_id, so the same item has the same id in every
index version and incremental adds need no coordination. A collision (two item ids with the
same hash) is detected and refused rather than silently merging two items.

Item ids are held in an Arrow string array, not as a million Python objects: loading, copying
and releasing a map then costs no per-item Python work (which would hold the GIL and stall
queries served from other threads during a hot swap).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa

_ID_MASK = (1 << 63) - 1  # keep ids non-negative: FAISS uses -1 for "no result"


class IdCollisionError(ValueError):
    pass


def stable_id(item_id: str) -> int:
    """63-bit FAISS id of an item id; stable across processes and versions."""
    digest = hashlib.blake2b(item_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _ID_MASK


def stable_ids(item_ids: Iterable[str]) -> np.ndarray:
    return np.fromiter((stable_id(i) for i in item_ids), dtype=np.int64)


def _as_arrow(item_ids) -> pa.Array:
    if isinstance(item_ids, pa.ChunkedArray):
        item_ids = item_ids.combine_chunks()
    if isinstance(item_ids, pa.Array):
        return item_ids.cast(pa.string())
    return pa.array([str(i) for i in item_ids], type=pa.string())


@dataclass(frozen=True)
class IdMap:
    """Sorted int64 ids with their item ids (aligned). Immutable; ``with_added`` copies."""

    ids: np.ndarray  # int64, sorted ascending
    item_ids: pa.Array  # string, aligned with ``ids``

    @classmethod
    def from_item_ids(cls, item_ids: Sequence[str]) -> "IdMap":
        items = _as_arrow(item_ids)
        return cls.from_pairs(stable_ids(items.to_pylist()), items)

    @classmethod
    def from_pairs(cls, ids, item_ids) -> "IdMap":
        ids = np.asarray(ids, dtype=np.int64)
        items = _as_arrow(item_ids)
        if len(ids) != len(items):
            raise ValueError(f"id map: {len(ids)} ids but {len(items)} item ids")
        if len(ids) > 1 and not (ids[1:] >= ids[:-1]).all():
            order = np.argsort(ids, kind="stable")
            ids, items = ids[order], items.take(pa.array(order))
        dup = np.flatnonzero(ids[1:] == ids[:-1])
        if len(dup):
            a, b = items[int(dup[0])].as_py(), items[int(dup[0]) + 1].as_py()
            if a == b:
                raise IdCollisionError(f"duplicate item id {a!r} in catalog")
            raise IdCollisionError(f"item ids {a!r} and {b!r} hash to the same FAISS id")
        ids.setflags(write=False)
        return cls(ids=ids, item_ids=items)

    def __len__(self) -> int:
        return len(self.ids)

    def contains(self, item_id: str) -> bool:
        i = stable_id(item_id)
        pos = int(np.searchsorted(self.ids, i))
        return pos < len(self.ids) and self.ids[pos] == i and self.item_ids[pos].as_py() == item_id

    def item_ids_of(self, ids: np.ndarray) -> list[str | None]:
        """Item ids of FAISS ids (``None`` for -1 / unknown ids)."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(self.ids):
            return [None] * len(ids)
        pos = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        found = self.ids[pos] == ids
        names = self.item_ids.take(pa.array(pos)).to_pylist()
        if found.all():
            return names
        return [n if ok else None for n, ok in zip(names, found.tolist())]

    def with_added(self, item_ids: Sequence[str]) -> "IdMap":
        new = [i for i in dict.fromkeys(item_ids) if not self.contains(i)]
        if not new:
            return self
        return IdMap.from_pairs(np.concatenate([self.ids, stable_ids(new)]),
                                pa.concat_arrays([self.item_ids, _as_arrow(new)]))
