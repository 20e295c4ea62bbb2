"""Print pip constraints that pin every dependency in pyproject.toml to its declared lower bound.

`.ci/run` installs the project against them in a second virtual environment and runs the same tests, so the
oldest versions the package declares are the versions it is tested on:

    python .ci/lower_bounds.py > constraints.txt && pip install -c constraints.txt -e ".[test]"
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*>=\s*(?P<version>[0-9][0-9.]*)\s*(?:,.*)?$")


def lower_bounds(pyproject: Path) -> list[str]:
    dependencies = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    pins = []
    for requirement in dependencies:
        m = REQUIREMENT.match(requirement.split(";")[0].strip())
        if m is None:
            raise SystemExit(f"{pyproject}: {requirement!r} has no `>=` lower bound to pin")
        pins.append(f"{m['name']}=={m['version']}")
    return pins


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    sys.stdout.write("".join(f"{pin}\n" for pin in lower_bounds(root / "pyproject.toml")))
