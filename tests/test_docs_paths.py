"""The manual stays true to the tree: every file the README and docs/ name (a test that shows a
guarantee, a module of the walk of one event, a linked page) exists, and the README stays a
manual (at most 250 lines). Dated records under docs/results/ are history and not checked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: `path/to/file.py`-style mentions of the project's files (in backticks or links)
NAMED_FILE = re.compile(r"(?<![\w/.])((?:tests|convcg|model|registry|streams|features|training|index_refresher|"
                        r"retrieval|loop|bench|scripts|docs)/[\w/.-]+\.(?:py|md|sh|yml|xml))")
LINK = re.compile(r"\]\(([^)#:]+)(?:#[^)]*)?\)")


def named_files(page: Path) -> set[str]:
    return set(NAMED_FILE.findall(page.read_text()))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_file_a_page_names_exists(page):
    missing = sorted(f for f in named_files(page) if not (ROOT / f).exists())
    assert not missing, f"{page.name} names files that are not there: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    broken = sorted(link for link in LINK.findall(page.read_text()) if not (page.parent / link).exists())
    assert not broken, f"{page.name} links to missing files: {broken}"


def test_the_guarantees_name_their_tests():
    tests = {f for f in named_files(ROOT / "docs" / "guarantees.md") if f.startswith("tests/")}
    assert len(tests) >= 15


def test_the_readme_is_a_manual_not_a_notebook():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_the_path_check_sees_a_missing_file(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("shown by `tests/test_no_such_file.py` and [a page](no_such_page.md)")
    assert named_files(page) == {"tests/test_no_such_file.py"}
    assert LINK.findall(page.read_text()) == ["no_such_page.md"]
