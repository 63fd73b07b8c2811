"""No public name recorded in ``public_api.json`` is removed or changes signature.

``python tests/test_public_api.py > tests/public_api.json`` records the current
face of the library (every name in a subpackage's ``__all__``, with the
signatures of it and of its public methods). New names may be added; a recorded
one must stay as it is.
"""

import importlib
import inspect
import json
import pkgutil
import sys
from pathlib import Path
from typing import Any

SUBPACKAGES = (
    "attacks",
    "attr",
    "datasets",
    "evaluation",
    "experiments",
    "metrics",
    "regularizers",
    "visualization",
)


def _describe(obj: Any) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return type(obj).__name__


def public_api() -> dict[str, str]:
    """``{"captum_robust.<package>.<name>[.<method>]": signature}``."""
    found: dict[str, str] = {}
    for package in SUBPACKAGES:
        module = importlib.import_module(f"captum_robust.{package}")
        for name in module.__all__:
            obj = getattr(module, name)
            key = f"captum_robust.{package}.{name}"
            found[key] = _describe(obj)
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if not attr.startswith("_") and callable(member):
                        found[f"{key}.{attr}"] = _describe(getattr(obj, attr))
    return found


RECORDED_FILE = Path(__file__).parent / "public_api.json"


def test_every_recorded_public_name_is_still_there_with_its_signature():
    recorded = json.loads(RECORDED_FILE.read_text())
    now = public_api()
    missing = sorted(set(recorded) - set(now))
    assert not missing, f"public names removed: {missing}"
    changed = {
        name: (recorded[name], now[name])
        for name in recorded
        if recorded[name] != now[name]
    }
    assert not changed, f"signatures changed (recorded, now): {changed}"


def test_the_record_covers_every_public_subpackage():
    # Read from the package on disk, so that a new subpackage missing from
    # SUBPACKAGES (and so unguarded) fails here.
    import captum_robust

    on_disk = {
        info.name
        for info in pkgutil.iter_modules(captum_robust.__path__)
        if info.ispkg and not info.name.startswith("_")
    }
    # The command's face is its command line, which the CLI tests pin.
    on_disk.discard("cli")
    assert set(SUBPACKAGES) == on_disk
    recorded = json.loads(RECORDED_FILE.read_text())
    assert {name.split(".")[1] for name in recorded} == on_disk


if __name__ == "__main__":
    json.dump(public_api(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
