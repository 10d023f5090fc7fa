"""Append-only parquet part files: the offline feature rows and the label table.

Feast's file offline store implements an offline push (``offline_write_batch``) by reading the
whole parquet file, concatenating and rewriting it: O(total rows) per push, which cannot keep up
with a stream. The sink instead appends one immutable part file per batch into the directory
that the feature view's ``FileSource`` points at (Feast reads a directory of parquet files as one
table). Part files are written to a temporary name and renamed, so a reader never sees half a
file and a crash leaves no torn part.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

PART_SUFFIX = ".parquet"


def write_part(directory: Path, table: pa.Table) -> Path:
    """Atomically add ``table`` as a new part file in ``directory``; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}{PART_SUFFIX}"
    tmp = directory / f".{name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, directory / name)
    return directory / name


def part_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.startswith("part-") and p.suffix == PART_SUFFIX)


def read_parts(directory: Path, schema: pa.Schema, columns: list[str] | None = None,
               filter=None) -> pa.Table:
    """All part files of ``directory`` as one table (empty table with ``schema`` if none)."""
    files = part_files(directory)
    if not files:
        empty = schema.empty_table()
        return empty.select(columns) if columns else empty
    ds = pads.dataset([str(f) for f in files], schema=schema, format="parquet")
    return ds.to_table(columns=columns, filter=filter)
