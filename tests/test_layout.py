"""The package's layout stays readable: subpackages on floors (``_utils`` at the
bottom, the command line on top), each importing only from floors below it, so
there is no import cycle; and no module too long to read at once."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "captum_robust"

# A subpackage may import from any floor below its own, never from its own floor's
# other rooms or from above (evaluation serves the experiments' names through a
# lazy module __getattr__, which is not a static import; see test_layering).
FLOORS = {
    "_utils": 0,
    "metrics": 1,
    "datasets": 1,
    "visualization": 1,
    "attr": 2,
    "evaluation": 2,
    "attacks": 3,
    "regularizers": 3,
    "experiments": 4,
    "cli": 5,
}

MAX_LINES = 700
# The base attack loop is one class, which the layout keeps whole.
LONGER_ALLOWED = {"attacks/_base.py": 900}


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _imported_subpackages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "captum_robust" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_every_subpackage_has_a_floor():
    on_disk = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert on_disk == set(FLOORS)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_only_down(path):
    parts = path.relative_to(PACKAGE).parts
    if len(parts) == 1:  # the package's face
        return
    room = parts[0]
    upward = {
        other
        for other in _imported_subpackages(path) - {room}
        if FLOORS[other] >= FLOORS[room]
    }
    assert not upward, f"{room} (floor {FLOORS[room]}) imports {sorted(upward)}"


def test_no_module_is_too_long_to_read():
    lengths = {
        str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in _modules()
    }
    too_long = {
        name: n
        for name, n in lengths.items()
        if n > LONGER_ALLOWED.get(name, MAX_LINES)
    }
    assert not too_long, f"split these along their seams: {too_long}"
