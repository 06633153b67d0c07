"""The README's promises hold: two quick-start commands, a course map generated from measurements, CI wiring;
every script answers --help without touching tracked files, the GPU check refuses a machine without CUDA, and
pretraining writes to build/ unless asked to replace the shipped checkpoint."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys

import pytest

from .nbtools import ROOT

README = (ROOT / "README.md").read_text()


def test_quick_start_is_exactly_two_commands():
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", README, re.S).group(1)
    commands = [ln.split("#")[0].strip() for ln in block.splitlines() if ln.split("#")[0].strip()]
    assert commands == ["make lab", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^lab:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "chromium" in ci


def test_course_map_is_generated_and_current():
    assert "<!-- course-map:start -->" in README
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "course_map.py"), "--check"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_notebook_is_in_the_course_map():
    for p in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"(notebooks/{p.name})" in README, p.name


def test_every_make_target_the_readme_names_exists():
    makefile = (ROOT / "Makefile").read_text()
    named = set(re.findall(r"`make ([a-z][\w-]*)", README))
    assert {"lab", "test", "html", "gpu-check", "wheel", "pretrain"} <= named
    for target in named:
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"README names `make {target}`, Makefile lacks it"


def test_readme_lists_every_torch_index_choice():
    section = README[README.index("## Install"):README.index("## HTML")]
    for choice in ("`auto`", "`cpu`", "`cuda`", "`default`", "`cu126`", "a URL"):
        assert choice in section, choice
    assert "Bring your own torch" in section and "pip install -e ." in section


SCRIPTS = sorted(p.relative_to(ROOT).as_posix() for d in ("tools", "benchmarks") for p in (ROOT / d).glob("*.py")
                 if '__name__ == "__main__"' in p.read_text())  # scripts, not helper modules such as tools/nbrun.py
# Tracked files some script can write: none may change when a script is only asked for --help.
WRITTEN = ["README.md", "lora_edu/data/toy_pretrained.safetensors", *sorted(
    p.relative_to(ROOT).as_posix() for d in ("notebooks/solutions", "benchmarks/results")
    for p in (ROOT / d).glob("*"))]


def _digest() -> dict[str, str]:
    return {f: hashlib.sha256((ROOT / f).read_bytes()).hexdigest() for f in WRITTEN if (ROOT / f).is_file()}


@pytest.mark.parametrize("cmd", [[s] for s in SCRIPTS] + [["-m", "lora_edu.pretrain"]], ids=lambda c: c[-1])
def test_scripts_answer_help_and_write_nothing(cmd):
    before = _digest()
    out = subprocess.run([sys.executable, *cmd, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("usage:"), out.stdout[:300]
    assert _digest() == before, f"{cmd}: --help changed a tracked file"
    if cmd == ["-m", "lora_edu.pretrain"]:
        assert out.stdout.startswith("usage: python -m lora_edu.pretrain")


def test_gpu_check_refuses_a_machine_without_cuda():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # no GPU visible, even on a GPU machine
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py")], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "no CUDA device" in out.stdout


def test_pretrain_writes_to_build_unless_asked(tmp_path):
    from lora_edu import load_pretrained, pretrained_info
    from lora_edu.pretrained import CHECKPOINT

    shipped = CHECKPOINT.read_bytes()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "lora_edu.pretrain", "--steps", "3"], capture_output=True,
                         text=True, cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    written = tmp_path / "build" / "toy_pretrained.safetensors"
    assert written.is_file() and CHECKPOINT.read_bytes() == shipped
    diff = float(re.search(r"largest difference from the shipped tensors: (\S+)", out.stdout).group(1))
    assert diff > 0  # 3 steps are not the 5,000-step recipe
    assert pretrained_info(written)["lora_edu_recipe"]["steps"] == 3
    assert load_pretrained("cpu", path=written).cfg == load_pretrained("cpu").cfg
    both = subprocess.run([sys.executable, "-m", "lora_edu.pretrain", "--out", "x", "--replace-shipped"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert both.returncode == 2 and "not allowed with" in both.stderr


def test_readme_package_example_runs(tmp_path, monkeypatch):
    """The README's `lora_edu` example runs as printed (with fewer training steps), in an empty folder."""
    code = re.search(r"## The package\s+```python\n(.*?)```", README, re.S).group(1)
    code = code.replace("steps=300", "steps=3")
    assert "steps=3," in code, "the example's training call changed: update this test"
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "my_adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "for_peft" / "adapter_config.json").is_file()
