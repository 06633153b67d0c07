"""The README's promises hold: two quick-start commands, a course map generated from measurements, CI wiring."""

from __future__ import annotations

import re
import subprocess
import sys

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
