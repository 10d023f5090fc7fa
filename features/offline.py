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
import pyarrow.compute as pc
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
    """All part files of ``directory`` as one table (empty table with ``schema`` if none). A
    part removed between listing and reading (merged by ``features.sink.compaction``, its rows now
    in a part listed again) makes it list again."""
    for attempt in range(3):
        files = part_files(directory)
        if not files:
            empty = schema.empty_table()
            return empty.select(columns) if columns else empty
        try:
            ds = pads.dataset([str(f) for f in files], schema=schema, format="parquet")
            return ds.to_table(columns=columns, filter=filter)
        except FileNotFoundError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def column_max(path: Path, column: str) -> float | None:
    """Largest value of a numeric ``column`` in one part file, from its parquet statistics
    (the column is read only if a row group has none); None for a file without rows."""
    pf = pq.ParquetFile(path)
    md = pf.metadata
    best = None
    for g in range(md.num_row_groups):
        group = md.row_group(g)
        if group.num_rows == 0:
            continue
        chunk = next(group.column(c) for c in range(group.num_columns) if group.column(c).path_in_schema == column)
        stats = chunk.statistics
        if stats is None or not stats.has_min_max:
            top = pc.max(pf.read_row_group(g, columns=[column]).column(column)).as_py()
        else:
            top = stats.max
        if top is not None and (best is None or top > best):
            best = top
    return best


def read_recent_parts(directory: Path, schema: pa.Schema, time_column: str, horizon: float,
                      columns: list[str] | None = None) -> pa.Table:
    """The rows of ``directory`` whose ``time_column`` is within ``horizon`` of its newest value
    stored. Files wholly older are skipped on their statistics, never read, so what is held is
    bounded by the horizon, not by the history on disk."""
    newest = {f: column_max(f, time_column) for f in part_files(directory)}
    known = [t for t in newest.values() if t is not None]
    if not known:
        empty = schema.empty_table()
        return empty.select(columns) if columns else empty
    cutoff = max(known) - horizon
    recent = [str(f) for f, t in newest.items() if t is not None and t >= cutoff]
    ds = pads.dataset(recent, schema=schema, format="parquet")
    return ds.to_table(columns=columns, filter=pc.field(time_column) >= cutoff)
