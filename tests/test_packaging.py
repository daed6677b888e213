"""pyproject.toml and environment.yml list the same dependencies with the same tested ranges."""

from __future__ import annotations

import tomllib

import yaml
from packaging.requirements import Requirement

from tests.helpers import ROOT

# conda-forge names that differ from PyPI's.
CONDA_NAMES = {"python-duckdb": "duckdb"}


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["test"]
    return {Requirement(r).name.lower(): str(Requirement(r).specifier) for r in requirements}


def _environment() -> dict[str, str]:
    spec = yaml.safe_load((ROOT / "environment.yml").read_text())
    out = {}
    for item in spec["dependencies"]:
        if not isinstance(item, str) or (item.startswith(("python", "pip")) and not item.startswith("python-")):
            continue
        requirement = Requirement(item)
        out[CONDA_NAMES.get(requirement.name.lower(), requirement.name.lower())] = str(requirement.specifier)
    return out


def test_environment_yml_matches_pyproject():
    assert _environment() == _pyproject()


def test_environment_name():
    assert yaml.safe_load((ROOT / "environment.yml").read_text())["name"] == "realtime_dashboard"
