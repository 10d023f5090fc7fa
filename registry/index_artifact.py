"""Versioned index artifacts on disk, and their verification.

Layout, beside the model versions (one folder per model version)::

    <index_root>/<model_version>/<index_version>/
        index.faiss     the FAISS index (IndexIDMap2 over flat-IP or HNSW-IP)
        ids.parquet     id (int64) -> item_id, one row per indexed item
        manifest.json   model_version, index_version, dim, count, kind, recall, files + sha256

An artifact is written into a temporary folder and renamed into place, so a reader never sees
a half-written one. Loading verifies everything and raises :class:`ArtifactError` (with a
short ``reason`` used as a metric label) instead of serving something broken. Artifacts are
found only inside the index root: versions are plain names and no folder or file may lead
outside through a symbolic link (``registry.containment``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from registry.containment import OutsideRoot, contained, inside
from registry.idmap import IdMap

log = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
IDS_FILE = "ids.parquet"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
_HASH_CHUNK = 8 * 1024 * 1024


#: refusal reasons that say the artifact's files are bad (building it again can fix them)
ARTIFACT_REASONS = frozenset({"missing", "manifest", "truncated", "checksum", "corrupt", "dimension", "count",
                              "version_mismatch"})


class ArtifactError(RuntimeError):
    """A refused artifact. ``reason``: missing | manifest | truncated | checksum | corrupt |
    dimension | count | version_mismatch | outside_root."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class IndexArtifact:
    path: Path
    manifest: dict[str, Any]
    index: Any  # faiss.IndexIDMap2
    idmap: IdMap

    @property
    def model_version(self) -> str:
        return self.manifest["model_version"]

    @property
    def index_version(self) -> str:
        return self.manifest["index_version"]

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def count(self) -> int:
        return int(self.manifest["count"])


def new_index_version() -> str:
    now = datetime.now(timezone.utc)
    return f"ix{now:%Y%m%dT%H%M%S}{now.microsecond:06d}"


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def artifact_dir(index_root: Path, model_version: str, index_version: str) -> Path:
    """``<index_root>/<model_version>/<index_version>``, never outside ``index_root``."""
    try:
        return contained(Path(index_root), model_version, index_version, what="index artifact")
    except OutsideRoot as exc:
        raise ArtifactError("outside_root", str(exc)) from None


def write_artifact(index_root: Path, model_version: str, index: Any, idmap: IdMap, *,
                   kind: str, recall: float | None, recall_k: int, build_seconds: float,
                   index_version: str | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write index + id map + manifest atomically; return the artifact folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from registry.faiss_lib import load_faiss

    faiss = load_faiss()
    index_version = index_version or new_index_version()
    final = artifact_dir(index_root, model_version, index_version)
    if final.exists():
        raise FileExistsError(f"index artifact {final} already exists")
    tmp = final.parent / f".tmp-{index_version}-{uuid.uuid4().hex[:6]}"
    tmp.mkdir(parents=True)
    try:
        faiss.write_index(index, str(tmp / INDEX_FILE))
        pq.write_table(pa.table({"id": pa.array(idmap.ids, pa.int64()),
                                 "item_id": idmap.item_ids}),
                       tmp / IDS_FILE)
        files = {name: {"sha256": file_digest(tmp / name), "bytes": (tmp / name).stat().st_size}
                 for name in (INDEX_FILE, IDS_FILE)}
        manifest = {
            "format": FORMAT_VERSION,
            "model_version": model_version,
            "index_version": index_version,
            "dim": int(index.d),
            "count": int(index.ntotal),
            "kind": kind,
            "metric": "inner_product",
            "recall_k": recall_k,
            "recall": recall,
            "build_seconds": round(build_seconds, 3),
            "created_at": time.time(),
            "files": files,
            **(extra or {}),
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        fsync_tree(tmp)  # the files are on disk before the rename publishes them
        os.rename(tmp, final)
        fsync_dir(final.parent)  # and the rename itself survives a power loss
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote index artifact %s (%s, %d items, dim %d)", final, kind, manifest["count"], manifest["dim"])
    return final


def read_manifest(path: Path) -> dict[str, Any]:
    mpath = Path(path) / MANIFEST_FILE
    if not mpath.is_file():
        raise ArtifactError("missing", f"index artifact {path}: no {MANIFEST_FILE}")
    if not inside(path, mpath):
        raise ArtifactError("outside_root", f"index artifact {path}: {MANIFEST_FILE} links outside "
                                            f"the artifact (to {mpath.resolve()})")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError("manifest", f"index artifact {path}: unreadable manifest: {exc}") from exc
    needed = ("model_version", "index_version", "dim", "count", "files")
    missing = [k for k in needed if k not in manifest]
    if missing:
        raise ArtifactError("manifest", f"index artifact {path}: manifest lacks {missing}")
    return manifest


def verify_files(path: Path, manifest: dict[str, Any]) -> None:
    for name in (INDEX_FILE, IDS_FILE):
        f = Path(path) / name
        want = manifest["files"].get(name)
        if want is None or not f.is_file():
            raise ArtifactError("missing", f"index artifact {path}: {name} missing")
        if not inside(path, f):
            raise ArtifactError("outside_root", f"index artifact {path}: {name} links outside the "
                                                f"artifact (to {f.resolve()})")
        size = f.stat().st_size
        if size != want["bytes"]:
            raise ArtifactError("truncated", f"index artifact {path}: {name} is {size} bytes, "
                                             f"manifest says {want['bytes']} (truncated or replaced)")
        digest = file_digest(f)
        if digest != want["sha256"]:
            raise ArtifactError("checksum", f"index artifact {path}: {name} checksum mismatch "
                                            f"({digest[:12]} != {want['sha256'][:12]})")


def load_artifact(path: Path, expected_model_version: str | None = None,
                  expected_dim: int | None = None) -> IndexArtifact:
    """Load and verify an artifact; raise ArtifactError on anything inconsistent."""
    import pyarrow.parquet as pq

    from registry.faiss_lib import load_faiss

    faiss = load_faiss()
    path = Path(path)
    manifest = read_manifest(path)
    if expected_model_version is not None and manifest["model_version"] != expected_model_version:
        raise ArtifactError("version_mismatch",
                            f"index artifact {path} was built for model {manifest['model_version']!r}, "
                            f"not {expected_model_version!r}")
    if path.parent.name != manifest["model_version"] or path.name != manifest["index_version"]:
        raise ArtifactError("version_mismatch",
                            f"index artifact {path}: folder does not match manifest versions "
                            f"({manifest['model_version']}/{manifest['index_version']})")
    if expected_dim is not None and int(manifest["dim"]) != expected_dim:
        raise ArtifactError("dimension", f"index artifact {path} has dim {manifest['dim']}, "
                                         f"model has dim {expected_dim}")
    verify_files(path, manifest)
    try:
        index = faiss.read_index(str(path / INDEX_FILE))
        table = pq.read_table(path / IDS_FILE)
    except Exception as exc:  # faiss raises RuntimeError with a C++ message
        raise ArtifactError("corrupt", f"index artifact {path}: unreadable: {exc}") from exc
    if index.d != int(manifest["dim"]):
        raise ArtifactError("dimension", f"index artifact {path}: index dim {index.d} != manifest dim {manifest['dim']}")
    if index.ntotal != int(manifest["count"]) or table.num_rows != index.ntotal:
        raise ArtifactError("count", f"index artifact {path}: index has {index.ntotal} vectors, "
                                     f"id map {table.num_rows}, manifest {manifest['count']}")
    try:
        idmap = IdMap.from_pairs(table.column("id").to_numpy(), table.column("item_id"))
    except ValueError as exc:
        raise ArtifactError("corrupt", f"index artifact {path}: bad id map: {exc}") from exc
    if hasattr(index, "id_map"):
        index_ids = np.sort(faiss.vector_to_array(index.id_map))
        if not np.array_equal(index_ids, idmap.ids):
            raise ArtifactError("count", f"index artifact {path}: id map does not match the index's ids")
    return IndexArtifact(path=path, manifest=manifest, index=index, idmap=idmap)


def list_artifacts(index_root: Path, model_version: str) -> list[Path]:
    """Complete artifacts of a model version, oldest first (none that lead outside the root)."""
    try:
        folder = contained(Path(index_root), model_version, what="model version")
    except OutsideRoot as exc:
        log.warning("no index artifacts listed: %s", exc)
        return []
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and (p / MANIFEST_FILE).is_file() and inside(index_root, p))


def latest_artifact(index_root: Path, model_version: str) -> Path | None:
    found = list_artifacts(index_root, model_version)
    return found[-1] if found else None


def find_artifact(index_root: Path, model_version: str, index_version: str | None = None) -> Path:
    if index_version is None:
        path = latest_artifact(index_root, model_version)
        if path is None:
            raise ArtifactError("missing", f"no index artifact for model {model_version!r} under {index_root}")
        return path
    path = artifact_dir(index_root, model_version, index_version)
    if not path.is_dir():
        raise ArtifactError("missing", f"no index artifact {index_version!r} for model {model_version!r}")
    return path


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (a rename into it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file of ``folder`` (not recursive), then the folder itself."""
    for f in Path(folder).iterdir():
        if f.is_file():
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(folder)


def quarantine_artifact(path: Path) -> Path:
    """Set a refused artifact aside (``.refused-<index_version>``, which no listing returns), so
    the next build writes a fresh one; returns where it went."""
    path = Path(path)
    aside = path.parent / f".refused-{path.name}-{uuid.uuid4().hex[:6]}"
    os.rename(path, aside)
    return aside


def prune_artifacts(index_root: Path, model_versions: set[str], keep: int,
                    protect: set[tuple[str | None, str | None]] = frozenset()) -> list[Path]:
    """Retention of index artifacts: per model version in ``model_versions``, the newest
    ``keep``; of other model versions, none; artifacts in ``protect`` ((model, index) pairs: what
    is served and what it would roll back to) always stay. Set-aside and half-written folders go
    too. Returns the folders removed."""
    root = Path(index_root)
    if not root.is_dir():
        return []
    protected_models = {m for m, _ in protect}
    removed: list[Path] = []
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        artifacts = list_artifacts(root, model_dir.name)
        kept = set(artifacts[-keep:]) if model_dir.name in model_versions else set()
        for folder in sorted(model_dir.iterdir()):
            if not folder.is_dir() or folder.is_symlink() or folder in kept:
                continue
            if (model_dir.name, folder.name) in protect:
                continue
            if folder.name.startswith(".tmp-") and time.time() - folder.stat().st_mtime < 3600:
                continue  # a build may be writing it right now
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        if model_dir.name not in model_versions and model_dir.name not in protected_models \
                and not any(model_dir.iterdir()):
            model_dir.rmdir()
    if removed:
        log.info("pruned %d index artifacts under %s (kept %d per model version, and %s)", len(removed), root,
                 keep, sorted(f"{m}/{i}" for m, i in protect))
    return removed
