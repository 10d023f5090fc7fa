"""Version names and the paths they select: never outside the root they are looked up in.

A model version or index version is a plain name (letters, digits, ``.``, ``_``, ``-``; not
starting with ``.``), so ``../x``, ``/abs/path`` or an empty name never becomes a path. The
folder it names is also resolved (symbolic links followed) and must stay inside the resolved
root: a link planted under the root that points elsewhere is refused the same way. A root that
is itself a link (``var/registry -> /data/registry``) is fine: containment is checked against
where the root really is.
"""

from __future__ import annotations

import re
from pathlib import Path

#: the version names the registry and the index builder write (v000001, ix20250101T...)
VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class OutsideRoot(ValueError):
    """A name that is not a plain version name, or a path that leaves its root."""


def check_version_name(name: object, what: str = "version") -> str:
    """``name`` if it is a plain version name; :class:`OutsideRoot` otherwise."""
    if not isinstance(name, str) or not VERSION_NAME.fullmatch(name):
        raise OutsideRoot(f"{what} {name!r} is not a plain version name "
                          "(letters, digits, '.', '_', '-'; no path separators; not starting with '.')")
    return name


def inside(root: Path, path: Path) -> bool:
    """Whether ``path`` (links followed) is ``root`` (links followed) or below it."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())


def contained(root: Path, *names: str, what: str = "version") -> Path:
    """``root / name / ...`` after checking every name and that the result (links followed)
    stays inside ``root``; raises :class:`OutsideRoot`."""
    path = Path(root)
    for name in names:
        path = path / check_version_name(name, what)
    if not inside(root, path):
        raise OutsideRoot(f"{what} {'/'.join(names)!r} leads outside {root} (to {path.resolve()})")
    return path
