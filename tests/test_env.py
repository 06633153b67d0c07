"""Packaging and install: environment files ↔ pyproject.toml ↔ constraints.txt agree, `import lora_edu` stays light,
the LICENSE ships, the torch installer picks the CPU-only build without a GPU and falls back fast, and `make lab`
turns JupyterLab's news pop-up off."""

from __future__ import annotations

import http.server
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
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
sys.path.insert(0, str(ROOT / "tools"))
import install_torch  # noqa: E402

CONDA_TO_PYPI = {"pytorch": "torch", "matplotlib-base": "matplotlib"}  # conda-forge name → PyPI name
NOT_PACKAGES = {"python", "pip"}
ENV_FILES = {"environment.yml": ["-e ."], "environment-dev.yml": ["-e .[dev]"]}  # file → its pip section


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


@pytest.fixture(scope="module", params=sorted(ENV_FILES))
def env(request) -> dict:
    data = yaml.safe_load((ROOT / request.param).read_text())
    data["_file"] = request.param
    return data


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
    assert env["name"] == {"environment.yml": "lora-edu", "environment-dev.yml": "lora-edu-dev"}[env["_file"]]
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
    assert pip == ENV_FILES[env["_file"]]
    extras = [re.fullmatch(r"-e \.\[(\w+)\]", p) for p in pip]
    for m in filter(None, extras):  # an extra named in the pip section exists in pyproject
        assert m.group(1) in pyproject["project"]["optional-dependencies"]


def test_dev_environment_is_the_user_environment_plus_dev_tools():
    user, dev = (conda_specs(yaml.safe_load((ROOT / f).read_text()))[0] for f in ENV_FILES)
    assert user == dev, "environment-dev.yml must list the same conda packages as environment.yml"


@pytest.mark.parametrize("name", sorted(ENV_FILES))
def test_the_conda_name_map_is_used(name):
    text = (ROOT / name).read_text()
    assert re.search(r"^\s*-\s*pytorch\b", text, re.M), "conda-forge calls torch 'pytorch'"
    assert not re.search(r"^\s*-\s*torch\b", text, re.M)
    assert re.search(r"^\s*-\s*matplotlib-base\b", text, re.M), "matplotlib-base: no Qt GUI stack"
    assert not re.search(r"^\s*-\s*matplotlib(?!-)\b", text, re.M)


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


# ---- LICENSE --------------------------------------------------------------------------------------------------
def test_license_file_is_declared_for_the_wheel(pyproject):
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Permission is hereby granted, free of charge" in text
    assert pyproject["project"]["license"] == "MIT"  # an SPDX expression (PEP 639)
    assert pyproject["project"]["license-files"] == ["LICENSE"]
    need = re.search(r"setuptools>=([\d.]+)", " ".join(pyproject["build-system"]["requires"]))
    assert need and Version(need.group(1)) >= Version("77"), "license-files needs setuptools >= 77"


# ---- torch installer (tools/install_torch.py) ------------------------------------------------------------------
CPU = install_torch.CPU_INDEX


@pytest.mark.parametrize("choice, gpu, system, want", [
    ("auto", False, "Linux", CPU), ("", False, "Linux", CPU), (None, False, "Linux", CPU),
    ("auto", True, "Linux", None), ("auto", False, "Darwin", None), ("auto", False, "Windows", None),
    ("cpu", True, "Linux", CPU), ("cuda", False, "Linux", None), ("default", False, "Linux", None),
    ("cu126", False, "Linux", "https://download.pytorch.org/whl/cu126"),
    ("https://mirror.example/torch-cpu/", False, "Linux", "https://mirror.example/torch-cpu"),
])
def test_torch_index_choice(choice, gpu, system, want):
    assert install_torch.choose_index(choice, gpu, system) == want


@pytest.mark.parametrize("bad", ["gpu", "cuda13", "www.example.org", "CPU "])
def test_torch_index_choice_refuses_unknown_values(bad):
    with pytest.raises(ValueError, match="TORCH_INDEX"):
        install_torch.choose_index(bad, False, "Linux")


def _script(path: Path, body: str) -> str:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_nvidia_gpu_detection(tmp_path):
    proc, none = tmp_path / "gpus", str(tmp_path / "no-such-nvidia-smi")
    assert not install_torch.has_nvidia_gpu(proc, none)
    proc.mkdir()
    assert not install_torch.has_nvidia_gpu(proc, none)  # driver loaded, no GPU listed
    (proc / "0000:01:00.0").mkdir()
    assert install_torch.has_nvidia_gpu(proc, none)
    empty = tmp_path / "empty"
    empty.mkdir()
    smi = _script(tmp_path / "smi-ok", "echo 'GPU 0: NVIDIA H200 (UUID: GPU-1234)'")
    assert install_torch.has_nvidia_gpu(empty, smi)  # WSL: no /proc entry, nvidia-smi lists one
    smi = _script(tmp_path / "smi-fail", "echo 'NVIDIA-SMI has failed' >&2; exit 9")
    assert not install_torch.has_nvidia_gpu(empty, smi)


def test_pinned_torch_is_read_from_constraints(tmp_path):
    assert install_torch.pinned_torch() == "2.13.0"
    (tmp_path / "c.txt").write_text("numpy==2.4.6\n")
    with pytest.raises(ValueError, match="torch"):
        install_torch.pinned_torch(tmp_path / "c.txt")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_index_is_given_up_within_the_timeout():
    t0 = time.perf_counter()
    assert not install_torch.reachable(f"http://127.0.0.1:{_closed_port()}/whl/cpu", timeout=5)  # refused
    assert time.perf_counter() - t0 < 3
    with socket.socket() as silent:  # accepts the connection, never answers: the timeout must end the wait
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        t0 = time.perf_counter()
        assert not install_torch.reachable(f"http://127.0.0.1:{silent.getsockname()[1]}/whl/cpu", timeout=1)
        assert 0.9 < time.perf_counter() - t0 < 5


@pytest.fixture
def local_index(tmp_path):
    """A local 'wheel index' over HTTP with a torch/ page, as PyTorch's index has."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "index.html").write_text("<a href='torch-2.13.0+cpu.whl'>torch</a>")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_reachable_index_is_used(local_index):
    assert install_torch.reachable(local_index)
    cmd = install_torch.pip_command("2.13.0", local_index)
    assert cmd[cmd.index("--extra-index-url") + 1] == local_index and "torch==2.13.0" in cmd
    assert "--extra-index-url" not in install_torch.pip_command("2.13.0", None)


def _dry_run(index: str) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(os.environ, TORCH_INDEX=index)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "install_torch.py"), "--dry-run", "--force"],
                         capture_output=True, text=True, env=env, timeout=120)
    return out, time.perf_counter() - t0


def test_installer_falls_back_to_the_default_index_fast():
    out, seconds = _dry_run(f"http://127.0.0.1:{_closed_port()}/whl/cpu")
    assert out.returncode == 0, out.stderr
    assert "is not reachable" in out.stdout and "installing torch==2.13.0 from the default index" in out.stdout
    pip = out.stdout.strip().splitlines()[-1]
    assert "pip install" in pip and "torch==2.13.0" in pip and "--extra-index-url" not in pip
    assert seconds < 30, f"the fallback took {seconds:.0f} s"


def test_installer_takes_torch_from_a_reachable_index(local_index):
    out, _ = _dry_run(local_index)
    assert out.returncode == 0, out.stderr
    assert f"from {local_index}" in out.stdout and f"--extra-index-url {local_index}" in out.stdout


def test_installer_reports_the_installed_build_and_its_size():
    import torch

    info = install_torch.installed()
    assert info["version"] == torch.__version__ and info["cuda"] == torch.version.cuda
    assert info["bytes"] > 50e6  # torch alone is hundreds of MB on disk
    text = install_torch.describe(info)
    assert torch.__version__ in text and ("CPU-only build" in text) == (torch.version.cuda is None)
    assert re.search(r"[\d,]+ MB on disk", text)


def test_makefile_installs_the_chosen_torch_first(tmp_path):
    make = shutil.which("make")
    assert make, "make is needed (.ci/run installs it)"
    out = subprocess.run([make, "-n", "-B", "setup", f"VENV={tmp_path / 'v'}", "TORCH_INDEX=cpu"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    torch_line = next(i for i, ln in enumerate(lines) if "tools/install_torch.py --index cpu" in ln)
    editable = next(i for i, ln in enumerate(lines) if " -e ." in ln)
    assert torch_line < editable, "torch must be installed before the package pulls in an unpinned one"


# ---- JupyterLab news pop-up -------------------------------------------------------------------------------------
def test_make_lab_turns_the_news_popup_off(tmp_path):
    """JupyterLab started with the Makefile's LAB_FLAGS reads jupyter/lab-settings: fetchNews defaults to "false"
    (the pop-up asks only while it is "none") and no update check."""
    flags = re.search(r"^LAB_FLAGS\s*:?=\s*(.+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    flags = flags.replace("$(CURDIR)", str(ROOT)).split()
    port, token = _closed_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "user"), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"))
    cmd = [str(Path(sys.executable).parent / "jupyter"), "lab", *flags, "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/lab/api/settings/@jupyterlab/apputils-extension:notification?token={token}"
    try:
        deadline, found = time.time() + 90, None
        while time.time() < deadline and proc.poll() is None and found is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    found = json.load(r)
            except OSError:
                time.sleep(0.5)
        assert found is not None, "JupyterLab did not answer"
        props = found["schema"]["properties"]
        assert props["fetchNews"]["default"] == "false"
        assert props["checkForUpdates"]["default"] is False
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
