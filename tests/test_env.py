"""Packaging: environment.yml ↔ pyproject.toml ↔ constraints.txt agree, and `import lora_edu` stays light."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # PyYAML comes with jupyterlab (jupyter-events)
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PYPI = {"pytorch": "torch"}  # conda-forge name → PyPI name, where they differ
NOT_PACKAGES = {"python", "pip"}


def norm(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def deps(pyproject) -> dict[str, SpecifierSet]:
    reqs = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    return {norm(r.name): r.specifier for r in reqs}


@pytest.fixture(scope="module")
def dev_deps(pyproject) -> dict[str, SpecifierSet]:
    reqs = [Requirement(r) for r in pyproject["project"]["optional-dependencies"]["dev"]]
    return {norm(r.name): r.specifier for r in reqs}


@pytest.fixture(scope="module")
def env() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def conda_specs(env) -> tuple[dict[str, SpecifierSet], list]:
    """{pypi name: specifier} of the conda packages, and the pip sub-list."""
    specs, pip = {}, None
    for item in env["dependencies"]:
        if isinstance(item, dict):
            assert set(item) == {"pip"}, f"unexpected mapping in dependencies: {item}"
            pip = item["pip"]
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", item.strip())
        assert m, f"cannot parse conda spec {item!r}"
        name, spec = m.groups()
        assert "=" not in spec or spec.startswith((">=", "==", "<=", "!=")), f"use pip-style bounds: {item!r}"
        specs[norm(CONDA_TO_PYPI.get(name, name))] = SpecifierSet(spec.replace(" ", ""))
    return specs, pip


def test_environment_uses_conda_forge_only(env):
    assert env["name"] == "lora-edu"
    assert env["channels"][0] == "conda-forge"
    assert "defaults" not in env["channels"]
    assert set(env["channels"]) <= {"conda-forge", "nodefaults"}


def test_environment_packages_agree_with_pyproject(env, deps):
    specs, _ = conda_specs(env)
    packages = {n: s for n, s in specs.items() if n not in NOT_PACKAGES}
    assert set(packages) == set(deps), (
        f"only in environment.yml: {sorted(set(packages) - set(deps))}; "
        f"only in pyproject.toml: {sorted(set(deps) - set(packages))}")
    for name, spec in packages.items():
        assert spec == deps[name], f"{name}: environment.yml says {spec}, pyproject.toml says {deps[name]}"
    assert "pip" in specs


def test_environment_python_and_editable_install(env, pyproject):
    specs, pip = conda_specs(env)
    assert specs["python"] == SpecifierSet(pyproject["project"]["requires-python"])
    assert pip == ["-e ."]


def test_the_conda_name_map_is_used():
    text = (ROOT / "environment.yml").read_text()
    assert re.search(r"^\s*-\s*pytorch\b", text, re.M), "conda-forge calls torch 'pytorch'"
    assert not re.search(r"^\s*-\s*torch\b", text, re.M)


@pytest.fixture(scope="module")
def pins() -> dict[str, Version]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert m, f"constraints.txt: every line must be name==version, got {line!r}"
        name = norm(m.group(1))
        assert name not in out, f"constraints.txt pins {name} twice"
        out[name] = Version(m.group(2))
    return out


def test_constraints_pin_every_direct_dependency(pins, deps, dev_deps):
    for name, spec in {**deps, **dev_deps}.items():
        assert name in pins, f"constraints.txt does not pin {name}"
        assert spec.contains(pins[name], prereleases=True), f"{name}=={pins[name]} violates pyproject's {spec}"
    assert pins["torch"] == Version("2.13.0")


def test_import_lora_edu_stays_light():
    code = ("import sys, lora_edu; heavy = ['matplotlib', 'ipywidgets', 'peft', 'transformers', 'loralib', "
            "'IPython', 'pandas']; print(','.join(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"import lora_edu pulled in: {out.stdout.strip()}"


def test_package_data_ships_the_checkpoint(pyproject):
    data = pyproject["tool"]["setuptools"]["package-data"]["lora_edu"]
    assert "data/*.safetensors" in data
    assert (ROOT / "lora_edu" / "data" / "toy_pretrained.safetensors").is_file()
