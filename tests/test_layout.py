"""The layout shows the architecture: components meet only at the contract (``convcg``, the
ground floor), the registry package, Kafka topics and the Feast store; only ``loop`` (the whole
loop, above the components) imports several of them; no production package imports a test
or a bench helper."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GROUND = "convcg"
REGISTRY = "registry"
COMPONENTS = ("streams", "features", "training", "index_refresher", "retrieval")
TOP = "loop"
PROJECT = {GROUND, REGISTRY, TOP, *COMPONENTS, "tests", "bench"}
#: what each package may import from the project (itself included)
ALLOWED = {
    GROUND: {GROUND},
    REGISTRY: {GROUND, REGISTRY},
    **{c: {GROUND, REGISTRY, c} for c in COMPONENTS},
    TOP: {GROUND, REGISTRY, TOP, *COMPONENTS},
}


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
