"""Compaction of the sink's part files: many small parts become a few large ones, rows unchanged.

The sink appends one part file per entity and one label part per flush (every few seconds), so
a folder would grow by thousands of files a day, and every reader (``convcg dataset``, Feast's
file offline store, the sink's own dedupe load at start) would list and open them all. Once a
folder holds more than ``max_parts``, each run of consecutive small parts (under
``part_bytes``) is rewritten as one part of up to about ``part_bytes``. Every row is kept as it
was (its ingestion time included), so point-in-time reads give the same rows after as before;
only the number of files changes. A folder then holds about ``total size / part_bytes`` large
parts plus at most ``max_parts`` recent small ones.

Order and atomicity: the merged part is named so it sorts where the first part of its run sat
(part files are read in name order), and it is renamed in before its sources are removed. A
reader listing the folder in between sees some rows twice, never none; both readers of these
folders resolve a repeated row to one (labels: first ingested per ``label_id``; feature rows:
newest per entity and event time, equal values). ``features.offline.read_parts`` lists again if
a part it listed was removed meanwhile.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from features.offline import PART_SUFFIX, part_files

log = logging.getLogger(__name__)

#: the suffix of a merged part's stem: ``part-<first>-c.parquet`` sorts just before ``part-<first>.parquet``
MERGED_MARK = "-c"


def runs_to_merge(sizes: list[tuple[Path, int]], max_parts: int, part_bytes: int) -> list[list[Path]]:
    """Pure: the runs of consecutive small parts (in name order) to rewrite as one part each,
    each run of at most about ``part_bytes`` and of two parts or more; none while the folder
    holds ``max_parts`` parts or fewer."""
    if len(sizes) <= max_parts:
        return []
    runs: list[list[Path]] = []
    run: list[Path] = []
    run_bytes = 0
    for path, size in sizes:
        if size >= part_bytes or run_bytes + size > part_bytes:
            if len(run) > 1:
                runs.append(run)
            run, run_bytes = [], 0
            if size >= part_bytes:
                continue
        run.append(path)
        run_bytes += size
    if len(run) > 1:
        runs.append(run)
    return runs


def merged_name(first: Path) -> str:
    stem = first.name[: -len(PART_SUFFIX)]
    return first.name if stem.endswith(MERGED_MARK) else f"{stem}{MERGED_MARK}{PART_SUFFIX}"


def merge_run(directory: Path, run: list[Path], schema: pa.Schema) -> Path:
    """Rewrite ``run`` as one part where its first part sorts; then remove the others."""
    table = pads.dataset([str(p) for p in run], schema=schema, format="parquet").to_table()
    target = directory / merged_name(run[0])
    tmp = directory / f".{target.name}.tmp"
    pq.write_table(table, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, target)  # a merged first part of the run is replaced by its superset in one step
    for p in run:
        if p != target:
            p.unlink(missing_ok=True)
    return target


def compact_parts(directory: Path, schema: pa.Schema, max_parts: int, part_bytes: int) -> int:
    """Compact ``directory`` if it holds more than ``max_parts`` parts; returns how many part
    files were removed (net)."""
    sizes = []
    for p in part_files(directory):
        try:
            sizes.append((p, p.stat().st_size))
        except FileNotFoundError:  # removed meanwhile
            continue
    removed = 0
    for run in runs_to_merge(sizes, max_parts, part_bytes):
        merge_run(directory, run, schema)
        removed += len(run) - 1
    if removed:
        log.info("compacted %s: %d part files fewer (%d left)", directory, removed, len(sizes) - removed)
    return removed
