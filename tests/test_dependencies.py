"""pyproject.toml's dependency rules: the tests run the libraries users get, and
no floor admits a wheel with a known-bad bundled codec."""
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml with the standard library")

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@pytest.fixture(scope="module")
def project():
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]


def requirements(specs):
    return {Requirement(s).name.lower(): Requirement(s) for s in specs}


def test_extras_do_not_narrow_the_base_dependencies(project):
    """An extra that pinned e.g. OpenCV would test another build than the one
    `pip install posepipe` (or `.[paddle]`) gives users."""
    base = requirements(project["dependencies"])
    for extra, specs in project["optional-dependencies"].items():
        narrowed = sorted(name for name in requirements(specs) if name in base)
        assert not narrowed, f"the {extra!r} extra constrains base dependencies again: {narrowed}"


@pytest.mark.parametrize(
    "name, first_fixed",
    # CVE-2023-4863 (libwebp heap overflow): fixed by the wheels bundling libwebp 1.3.2.
    [("pillow", "10.0.1"), ("opencv-python-headless", "4.8.1.78")],
)
def test_floors_exclude_wheels_with_the_libwebp_flaw(project, name, first_fixed):
    requirement = requirements(project["dependencies"])[name]
    floors = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==", "~=")]
    assert floors and min(floors) >= Version(first_fixed), f"{requirement} admits releases before {first_fixed}"
