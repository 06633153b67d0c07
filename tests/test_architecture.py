"""The layout CONTRIBUTING.md promises: a small core in layers, one course module per notebook, no private imports."""

from __future__ import annotations

import ast
import json
import re

import pytest

from .nbtools import NOTEBOOKS, ROOT

PKG = ROOT / "lora_edu"
CORE = sorted(PKG.glob("*.py"))
COURSE = sorted((PKG / "course").rglob("*.py"))
# The core's layers, bottom first: a module imports only modules listed before it (runtime is below everything).
LAYERS = ["runtime", "lowrank", "layer", "inject", "peft_format", "adapters", "model", "tasks", "train", "pretrained",
          "pretrain"]
CODE_LINE_BUDGET = 1500


def code_lines(path) -> int:
    """Lines a reader must parse as code: not blank, not a comment, not a docstring."""
    src = path.read_text()
    doc = set()
    for n in ast.walk(ast.parse(src)):
        body = getattr(n, "body", None)
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body \
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            doc.update(range(body[0].lineno, body[0].end_lineno + 1))
    return sum(1 for i, line in enumerate(src.splitlines(), 1)
               if line.strip() and not line.strip().startswith("#") and i not in doc)


def _imports(path) -> list[tuple[str, list[str]]]:
    """(module, names) for every `from X import names` and `import X` in a file, relative ones resolved."""
    pkg = path.relative_to(ROOT).with_suffix("").parts[:-1]
    out = []
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom):
            base = list(pkg[:len(pkg) - n.level + 1]) if n.level else []
            mod = ".".join(base + ([n.module] if n.module else []))
            out.append((mod, [a.name for a in n.names]))
        elif isinstance(n, ast.Import):
            out += [(a.name, []) for a in n.names]
    return out


def test_core_is_small():
    total = sum(code_lines(p) for p in CORE)
    physical = sum(len(p.read_text().splitlines()) for p in CORE)
    assert total <= CODE_LINE_BUDGET, f"core has {total} code lines ({physical} with docstrings and blanks)"


def test_core_layers_and_no_ui():
    assert {p.stem for p in CORE} - {"__init__"} == set(LAYERS), "a new core module must be placed in LAYERS"
    for p in CORE:
        for mod, _names in _imports(p):
            assert not mod.startswith(("matplotlib", "ipywidgets", "lora_edu.course")), f"{p.name} imports {mod}"
            if p.stem != "__init__" and mod.startswith("lora_edu."):
                dep = mod.split(".")[1]
                assert LAYERS.index(dep) < LAYERS.index(p.stem), f"{p.name} imports {dep}, a layer above it"


@pytest.mark.parametrize("path", CORE + COURSE, ids=lambda p: str(p.relative_to(PKG)))
def test_no_private_names_across_modules(path):
    for mod, names in _imports(path):
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{path.relative_to(ROOT)} imports private {private} from {mod}"


NBS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NBS, ids=lambda p: p.name)
def test_each_notebook_has_its_module_and_uses_no_other(path):
    """A teacher finds notebook NN's code by its number: lora_edu/course/nbNN.py and checks/nbNN.py."""
    nn = path.name[:2]
    assert (PKG / "course" / f"nb{nn}.py").is_file() and (PKG / "course" / "checks" / f"nb{nn}.py").is_file()
    code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    used = set(re.findall(r"\bnb(\d\d)\b", code))
    assert used <= {nn}, f"{path.name} uses the modules of notebooks {sorted(used - {nn})}"
    assert not re.search(r"\._[A-Za-z]", re.sub(r"\.__\w+__", "", code)), f"{path.name} reads a private attribute"


FACTORIES = {"randn", "rand", "zeros", "ones", "full", "arange", "empty", "tensor", "eye", "randint", "linspace",
             "logspace", "randperm"}


@pytest.mark.parametrize("path", sorted((PKG / "course").glob("*.py")), ids=lambda p: p.name)
def test_course_tensors_name_their_device(path):
    """Device plumbing, checked on a CPU-only machine: every tensor the course code creates says where it lives —
    the model's device for what meets the model, "cpu" for seeded draws and statistics — so nothing silently lands
    on the default device and meets a CUDA model later."""
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in FACTORIES \
                and isinstance(n.func.value, ast.Name) and n.func.value.id == "torch":
            assert "device" in {k.arg for k in n.keywords}, f"{path.name}:{n.lineno}: {ast.unparse(n)} has no device="
