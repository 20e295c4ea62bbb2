"""Tests for the package's metadata in ``pyproject.toml``: what PyPI would refuse, checked before an upload does."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the metadata is the same on every Python
trove_classifiers = pytest.importorskip("trove_classifiers")

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]


def test_every_classifier_is_on_the_canonical_list(project: dict) -> None:
    unknown = [c for c in project["classifiers"] if c not in trove_classifiers.classifiers]
    assert not unknown, f"PyPI refuses an upload with classifiers outside the trove-classifiers list: {unknown}"
    deprecated = [c for c in project["classifiers"] if c in trove_classifiers.deprecated_classifiers]
    assert not deprecated, f"deprecated classifiers: {deprecated}"


def test_classifiers_are_unique_and_sorted(project: dict) -> None:
    assert project["classifiers"] == sorted(set(project["classifiers"]))


def test_no_license_classifier_with_an_spdx_license(project: dict) -> None:
    assert isinstance(project["license"], str), "`license` is an SPDX expression"
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]


def test_one_development_status(project: dict) -> None:
    assert len([c for c in project["classifiers"] if c.startswith("Development Status ::")]) == 1


def test_python_classifiers_start_at_requires_python(project: dict) -> None:
    minimum = re.fullmatch(r">=\s*3\.(\d+)", project["requires-python"])
    assert minimum, project["requires-python"]
    minors = sorted(
        int(m.group(1))
        for c in project["classifiers"]
        if (m := re.fullmatch(r"Programming Language :: Python :: 3\.(\d+)", c))
    )
    assert minors, "no `Programming Language :: Python :: 3.x` classifier"
    assert minors[0] == int(minimum.group(1))
    assert minors == list(range(minors[0], minors[-1] + 1)), f"a gap in the Python versions: {minors}"


def test_project_urls_are_https(project: dict) -> None:
    for label, url in project.get("urls", {}).items():
        assert url.startswith("https://"), (label, url)


def test_every_dependency_has_a_lower_bound(project: dict) -> None:
    for requirement in project["dependencies"]:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+>=[0-9.]+(,<[0-9.]+)?", requirement.split(";")[0].strip()), requirement


def test_lower_bounds_pin_every_dependency(project: dict) -> None:
    spec = importlib.util.spec_from_file_location("lower_bounds", PYPROJECT.parent / ".ci" / "lower_bounds.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pins = module.lower_bounds(PYPROJECT)
    names = [re.split(r"[\[>=<;\s]", r, maxsplit=1)[0] for r in project["dependencies"]]
    assert [p.split("==")[0] for p in pins] == names
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9.]*", p) for p in pins), pins
