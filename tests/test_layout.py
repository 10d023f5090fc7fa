"""The layout shows the architecture: components meet only at the contract (``convcg``, the
ground floor), the two-tower model (``model``, above it), the registry package (above the model),
Kafka topics and the Feast store; only ``loop`` (the whole loop, above the components) imports
several of them; no production package imports a test or a bench helper. Inside a package, no
module is longer than a reader can hold and no folder holds more modules than a reader can scan."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GROUND = "convcg"
MODEL = "model"
REGISTRY = "registry"
COMPONENTS = ("streams", "features", "training", "index_refresher", "retrieval")
TOP = "loop"
PROJECT = {GROUND, MODEL, REGISTRY, TOP, *COMPONENTS, "tests", "bench"}
#: what each package may import from the project (itself included)
ALLOWED = {
    GROUND: {GROUND},
    MODEL: {GROUND, MODEL},
    REGISTRY: {GROUND, MODEL, REGISTRY},
    **{c: {GROUND, MODEL, REGISTRY, c} for c in COMPONENTS},
    TOP: {GROUND, MODEL, REGISTRY, TOP, *COMPONENTS},
}
#: the packages whose size the checks below hold: every production package, and the benches
SIZED = (*sorted(ALLOWED), "bench")
MAX_MODULE_LINES = 450
MAX_MODULES_PER_FOLDER = 12
#: modules that are gone and must not come back
GONE = ("training/evaluation.py", "bench/eval_movielens.py")
#: used only by tests and benches (the ``[test]`` extra) or not at all: never a runtime dependency
NOT_RUNTIME = ("kafka-python", "psutil", "psycopg")


def project_imports(path: Path) -> set[tuple[str, int]]:
    """Top-level project packages imported anywhere in a module (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {(n.split(".")[0], node.lineno) for n in names if n.split(".")[0] in PROJECT}
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_its_layer_may(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no modules found under {package}/"
    wrong = [f"{f.relative_to(ROOT)}:{line} imports {name}"
             for f in files for name, line in sorted(project_imports(f)) if name not in ALLOWED[package]]
    assert not wrong, "\n".join(wrong)


def test_only_the_loop_imports_several_components():
    for package in ALLOWED:
        used = {name for f in (ROOT / package).rglob("*.py") for name, _ in project_imports(f)}
        if package != TOP:
            assert len(used & set(COMPONENTS)) <= 1, f"{package} imports {sorted(used & set(COMPONENTS))}"


def test_the_check_sees_a_cross_component_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from training.trainer.step import fit\n")
    assert project_imports(module) == {("training", 2)}


def test_every_package_is_installed_and_shipped_in_the_image():
    pyproject = (ROOT / "pyproject.toml").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ALLOWED:
        assert f'"{package}*"' in pyproject, f"pyproject.toml does not install {package}/"
        assert f"COPY {package} ./{package}" in dockerfile, f"the Dockerfile does not copy {package}/"


def long_modules(folder: Path) -> list[str]:
    """Modules under ``folder`` longer than ``MAX_MODULE_LINES``."""
    return [f"{f.relative_to(folder)}: {n} lines" for f in sorted(folder.rglob("*.py"))
            if (n := len(f.read_text().splitlines())) > MAX_MODULE_LINES]


def crowded_folders(folder: Path) -> list[str]:
    """Folders under ``folder`` (itself included) with more than ``MAX_MODULES_PER_FOLDER`` modules."""
    folders = [folder, *(d for d in sorted(folder.rglob("*")) if d.is_dir())]
    return [f"{d}: {n} modules" for d in folders
            if (n := len([f for f in d.glob("*.py") if f.name != "__init__.py"])) > MAX_MODULES_PER_FOLDER]


@pytest.mark.parametrize("package", SIZED)
def test_no_module_is_longer_than_the_limit(package):
    long = long_modules(ROOT / package)
    assert not long, f"{package}: modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(long)


@pytest.mark.parametrize("package", SIZED)
def test_no_folder_holds_more_modules_than_the_limit(package):
    crowded = crowded_folders(ROOT / package)
    assert not crowded, f"folders over {MAX_MODULES_PER_FOLDER} modules:\n" + "\n".join(crowded)


def test_the_size_checks_see_a_long_module_and_a_crowded_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "long.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    (tmp_path / "sub" / "short.py").write_text("x = 1\n" * MAX_MODULE_LINES)
    assert long_modules(tmp_path) == [f"sub/long.py: {MAX_MODULE_LINES + 1} lines"]
    for i in range(MAX_MODULES_PER_FOLDER):
        (tmp_path / f"m{i}.py").write_text("")
    (tmp_path / "__init__.py").write_text("")
    assert crowded_folders(tmp_path) == []  # the limit itself, __init__ not counted
    (tmp_path / "one_more.py").write_text("")
    assert crowded_folders(tmp_path) == [f"{tmp_path}: {MAX_MODULES_PER_FOLDER + 1} modules"]


@pytest.mark.parametrize("path", GONE)
def test_superseded_modules_are_gone(path):
    assert not (ROOT / path).exists(), f"{path} is superseded (one evaluation: training/evaluation/) and must not return"


def test_the_headline_metric_is_named_in_one_place():
    """Its name is made by ``training.evaluation.protocol.metric_name`` and used as ``HEADLINE``."""
    literal = '"conversion_' + 'recall@100"'  # spelt in two halves so this file does not match itself
    home = ROOT / "training" / "evaluation" / "protocol.py"
    found = [f"{f.relative_to(ROOT)}" for package in sorted(PROJECT) for f in sorted((ROOT / package).rglob("*.py"))
             if f != home and (literal in f.read_text() or literal.replace('"', "'") in f.read_text())]
    assert not found, f"the headline metric's name written out (use HEADLINE) in:\n" + "\n".join(found)



def runtime_dependencies() -> list[str]:
    """The distribution names in ``[project] dependencies`` of pyproject.toml."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return [re.split(r"[\s\[<>=!~;]", d, maxsplit=1)[0].lower() for d in deps]


@pytest.mark.parametrize("name", NOT_RUNTIME)
def test_test_only_libraries_are_not_runtime_dependencies(name):
    deps = runtime_dependencies()
    assert "torch" in deps and "feast" in deps  # the check reads the real list
    assert not [d for d in deps if d.startswith(name)], (
        f"{name} is a runtime dependency in pyproject.toml (tests and benches only: the [test] extra)")
