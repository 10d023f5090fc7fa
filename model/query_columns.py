"""Two views of a batch of queries as columns, for the one query encoder
(``model.encoding.encode_query_columns``): a frame (training sets, evaluation, large batches)
or the query dicts themselves (the retrieval service's single query, with no frame to build).

Each view gives a column's values one per query, as the frame of ``queries_frame(queries)``
would hold them: a key no query has is absent; a query without a key that others have reads
NaN; a column's values are inferred as pandas infers a frame column (an int column with a
missing value is float, ...). The dict view reads plain columns (every value a string, a list,
or a real number) directly and hands any other column to pandas, so both views agree on every
input (``tests/model/test_query_fast_path.py``).
"""

from __future__ import annotations

import numbers
from typing import Protocol, Sequence

import numpy as np
import pandas as pd

USER_PREFIX = "user__"
#: the column holding each query's time (event-time seconds); training-set rows without it are
#: asked at their impression time
QUERY_TIME = "as_of"
#: the query keys that are not user features (everything else is one, ``user__``-prefixed)
QUERY_KEYS = ("user_id", "surface", "recent_items", QUERY_TIME)


def query_row(query: dict) -> dict:
    """One query dict (``user_id, surface, recent_items?, as_of?, <feature>?``) with its user
    feature keys carrying the ``user__`` prefix (a bare feature name is accepted too)."""
    if "user_id" not in query:
        raise ValueError(f"query without user_id: {query!r}")
    row = {}
    for key, value in query.items():
        if key in QUERY_KEYS or key.startswith(USER_PREFIX):
            row[key] = value
        else:
            row[USER_PREFIX + key] = value
    return row


def is_list(value) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


class QueryColumns(Protocol):
    def __len__(self) -> int: ...

    def has(self, name: str) -> bool: ...

    def values(self, name: str) -> list:
        """The column's values, one Python object per query (a present column only)."""
        ...

    def numbers(self, name: str) -> np.ndarray:
        """float64, one per query; NaN where a value is missing or not a number."""
        ...


class FrameColumns:
    def __init__(self, frame: pd.DataFrame):
        self.frame = frame

    def __len__(self) -> int:
        return len(self.frame)

    def has(self, name: str) -> bool:
        return name in self.frame.columns

    def values(self, name: str) -> list:
        return self.frame[name].tolist()

    def numbers(self, name: str) -> np.ndarray:
        return _frame_numbers(self.frame[name])


def _frame_numbers(column: pd.Series) -> np.ndarray:
    return pd.to_numeric(column, errors="coerce").to_numpy(np.float64, na_value=np.nan)


def _real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


class DictColumns:
    """Query dicts as columns (``query_row`` keys), without building a frame."""

    def __init__(self, queries: Sequence[dict]):
        self.rows = [query_row(q) for q in queries]
        self.names = {key for row in self.rows for key in row}

    def __len__(self) -> int:
        return len(self.rows)

    def has(self, name: str) -> bool:
        return name in self.names

    def _raw(self, name: str) -> list:
        return [row.get(name, np.nan) for row in self.rows]

    def values(self, name: str) -> list:
        raw = self._raw(name)
        if all(isinstance(v, str) or is_list(v) for v in raw):
            return raw  # an object column of strings / lists holds them as they are
        return pd.Series(raw).tolist()

    def numbers(self, name: str) -> np.ndarray:
        raw = self._raw(name)
        if all(v is None or _real(v) for v in raw):
            # a numeric (or all-missing) column: pandas' int/float column, as float64
            return np.array([np.nan if v is None else v for v in raw], dtype=np.float64)
        return _frame_numbers(pd.Series(raw))
