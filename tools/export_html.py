"""Execute the notebooks and export them to HTML pages that read offline, with an index page.

Usage: python tools/export_html.py OUT_DIR [--fast] [--reuse build/executed] [notebook ...]

Notebooks run in full mode unless --fast (or LORA_EDU_FAST=1) is given. With --reuse, already-executed copies
(what `make test` leaves in build/executed) are exported without running them again. The pages load nothing from
the network: equations are converted to MathML at export time (latex2mathml; browsers draw MathML natively),
widgets are drawn from their saved state as they stood after the notebook ran (sliders at their values, the
figures in their Output areas, finished progress bars), and every page links to the previous and next notebook
and to the index.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import html
import json
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from jinja2 import DictLoader, pass_context
from nbconvert import HTMLExporter
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

sys.path.insert(0, str(Path(__file__).resolve().parent))
from course_map import objectives  # noqa: E402
from nbrun import notebook_client  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
NOTE = ("Static page: sliders and buttons show the state the notebook was run in, and the worked solutions are "
        "left out (<code>make solutions</code>). Run it with <code>make lab</code>.")


# ------------------------------------------------------------------------------------------------- equations
class MathError(ValueError):
    """A LaTeX expression that latex2mathml could not turn into MathML."""


def tex_to_mathml(tex: str, display: bool = False) -> str:
    """MathML for a LaTeX expression; MathError if any command is left unconverted."""
    from latex2mathml.converter import convert

    try:
        out = convert(tex.strip(), display="block" if display else "inline")
    except Exception as e:  # noqa: BLE001 — latex2mathml raises many exception types on malformed input
        raise MathError(f"cannot convert ${tex}$: {type(e).__name__} {e}") from e
    left = re.findall(r">\s*(\\[A-Za-z]+)", out)
    if left:
        raise MathError(f"unknown LaTeX command(s) {left} in ${tex}$")
    return out


def _math_or_code(tex: str, display: bool = False, errors: list[str] | None = None) -> str:
    """MathML, or the LaTeX source as code when it cannot be converted (the error noted in `errors`)."""
    try:
        return tex_to_mathml(tex, display)
    except MathError as e:
        if errors is not None:
            errors.append(str(e))
        return f'<code class="tex">{html.escape(tex)}</code>'


class MathMLRenderer(IPythonRenderer):
    """nbconvert's markdown renderer with equations as MathML instead of $…$ left for MathJax."""

    errors: list[str] = []

    def _math(self, tex: str, display: bool) -> str:
        return _math_or_code(tex, display, self.errors)

    def block_math(self, body: str) -> str:
        return self._math(body, True)

    def inline_math(self, body: str) -> str:
        return self._math(body, False)

    def latex_environment(self, name: str, body: str) -> str:
        return self._math(f"\\begin{{{name}}}{body}\\end{{{name}}}", True)


def markdown_to_html(source: str, errors: list[str] | None = None) -> str:
    """Markdown with math to HTML with MathML (errors collected in `errors`)."""
    renderer = MathMLRenderer(escape=False)
    renderer.errors = errors if errors is not None else []
    return MarkdownWithMath(renderer=renderer).render(source)


# --------------------------------------------------------------------------------------------------- widgets
def _models(nb) -> dict:
    return nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})


def _ref(value: str) -> str:
    return value[len("IPY_MODEL_"):] if isinstance(value, str) and value.startswith("IPY_MODEL_") else value


def _hidden(models: dict, state: dict) -> bool:
    layout = models.get(_ref(state.get("layout", "")), {}).get("state", {})
    return layout.get("display") == "none" or layout.get("visibility") == "hidden"


def render_output(out: dict, models: dict | None = None) -> str:
    """One saved output (display_data, execute_result, stream, error) as static HTML."""
    kind = out.get("output_type")
    if kind == "stream":
        return f"<pre>{html.escape(''.join(out.get('text', '')))}</pre>"
    if kind == "error":
        tb = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(out.get("traceback", [])))
        return f'<pre class="lora-error">{html.escape(tb)}</pre>'
    data = out.get("data", {})
    if WIDGET_VIEW in data:
        return render_widget(models or {}, data[WIDGET_VIEW].get("model_id", ""))
    for mime in ("image/png", "image/jpeg"):
        if mime in data:
            b64 = "".join(data[mime]).replace("\n", "")
            return f'<img alt="figure" src="data:{mime};base64,{b64}">'
    if "image/svg+xml" in data:
        return "".join(data["image/svg+xml"])
    if "text/html" in data:
        return "".join(data["text/html"])
    if "text/markdown" in data:
        return markdown_to_html("".join(data["text/markdown"]))
    if "text/latex" in data:
        return _math_or_code("".join(data["text/latex"]).strip().strip("$"), display=True)
    if "text/plain" in data:
        return f"<pre>{html.escape(''.join(data['text/plain']))}</pre>"
    return ""


def _label(text: str) -> str:
    return f'<span class="lora-w-label">{html.escape(text)}</span>' if text else ""


def _closed_progress(models: dict, s: dict) -> str:
    """A progress bar tqdm hid when it closed (leave=False): its text stopped at the last refresh, so the line is
    rebuilt from the bar's final count. Any other hidden widget draws nothing."""
    kids = [models.get(_ref(c), {}) for c in s.get("children", [])]
    bar = next((k.get("state", {}) for k in kids if k.get("model_name", "").endswith("ProgressModel")), None)
    if bar is None:
        return ""
    html_kids = [k.get("state", {}).get("value", "") for k in kids if k.get("model_name") == "HTMLModel"]
    desc = re.sub(r"\s*\d+%\s*$", "", html_kids[0] if html_kids else "")
    value, top = bar.get("value", 0), bar.get("max", 100) or 1
    return (f'<div class="lora-w-hbox"><span class="lora-w-html">{desc} {100 * value / top:.0f}%</span>'
            f'<progress class="lora-w-progress" value="{value}" max="{top}"></progress>'
            f'<span class="lora-w-html">{value:g}/{top:g}</span></div>')


def render_widget(models: dict, model_id: str, depth: int = 0) -> str:
    """The widget `model_id` and its children as static HTML, from the notebook's saved widget state."""
    entry = models.get(model_id)
    if entry is None or depth > 20:
        return ""
    name, s = entry.get("model_name", ""), entry.get("state", {})
    if _hidden(models, s):
        return _closed_progress(models, s)
    desc = s.get("description", "")
    kids = "".join(render_widget(models, _ref(c), depth + 1) for c in s.get("children", []))
    if name in ("VBoxModel", "BoxModel", "GridBoxModel", "AccordionModel", "TabModel", "StackModel"):
        return f'<div class="lora-w-vbox">{kids}</div>'
    if name == "HBoxModel":
        return f'<div class="lora-w-hbox">{kids}</div>'
    if name == "OutputModel":
        inner = "".join(render_output(o, models) for o in s.get("outputs", []))
        return f'<div class="lora-w-output">{inner}</div>'
    if name.endswith("SliderModel"):
        lo, hi, value = s.get("min", 0), s.get("max", 100), s.get("value", 0)
        if name == "FloatLogSliderModel":  # min/max are exponents of `base`
            import math

            pos = math.log(value, s.get("base", 10)) if value and value > 0 else lo
            shown = f"{value:.3g}"
        elif isinstance(value, list):  # range sliders
            pos, shown = value[0], f"{value[0]}–{value[1]}"
        else:
            pos, shown = value, f"{value:.4g}" if isinstance(value, float) else str(value)
        return (f'<div class="lora-w-row">{_label(desc)}<input type="range" disabled min="{lo}" max="{hi}" '
                f'step="any" value="{pos}"><span class="lora-w-value">{html.escape(shown)}</span></div>')
    if name in ("FloatProgressModel", "IntProgressModel"):
        style = s.get("bar_style") or ""
        return (f'<span class="lora-w-row">{_label(desc)}<progress class="lora-w-progress {style}" '
                f'value="{s.get("value", 0)}" max="{s.get("max", 100)}"></progress></span>')
    if name in ("DropdownModel", "SelectModel", "RadioButtonsModel", "ToggleButtonsModel"):
        labels, index = s.get("_options_labels", []), s.get("index")
        chosen = labels[index] if isinstance(index, int) and 0 <= index < len(labels) else ""
        return (f'<div class="lora-w-row">{_label(desc)}<select disabled><option>{html.escape(chosen)}</option>'
                "</select></div>")
    if name in ("CheckboxModel", "ToggleButtonModel"):
        checked = " checked" if s.get("value") else ""
        return f'<label class="lora-w-row"><input type="checkbox" disabled{checked}> {html.escape(desc)}</label>'
    if name == "ButtonModel":
        return f'<button disabled class="lora-w-button">{html.escape(desc)}</button>'
    if name == "LabelModel":
        return f'<span class="lora-w-label">{html.escape(str(s.get("value", "")))}</span>'
    if name in ("HTMLModel", "HTMLMathModel"):
        value = str(s.get("value", ""))
        if name == "HTMLMathModel":
            value = re.sub(r"\$([^$]+)\$", lambda m: _math_or_code(m.group(1)), value)
        return f'<span class="lora-w-html">{_label(desc)}{value}</span>'
    if name in ("TextModel", "TextareaModel", "IntTextModel", "FloatTextModel", "BoundedIntTextModel",
                "BoundedFloatTextModel"):
        return (f'<div class="lora-w-row">{_label(desc)}<input disabled value="{html.escape(str(s.get("value", "")))}">'
                "</div>")
    if name == "ImageModel":
        buf = next((b for b in entry.get("buffers", []) if b.get("path") == ["value"]), None)
        if buf is None:
            return ""
        b64 = buf["data"] if buf.get("encoding") == "base64" else base64.b64encode(buf["data"].encode()).decode()
        return f'<img alt="{html.escape(desc or "image")}" src="data:image/{s.get("format", "png")};base64,{b64}">'
    kind = html.escape(name.removesuffix("Model"))
    return f'<span class="lora-w-unknown">[{kind}: run the notebook to use it]</span>'


def static_outputs(nb):
    """Outputs that need no script: widget views drawn from the saved state (which is then dropped), LaTeX
    outputs as MathML. Cells tagged `solution` are left out: a page read along in class must not give the
    answers away (the solutions edition has them)."""
    nb.cells = [c for c in nb.cells if "solution" not in c.get("metadata", {}).get("tags", [])]
    models = _models(nb)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_VIEW in data:
                drawn = render_widget(models, data.pop(WIDGET_VIEW).get("model_id", ""))
                data.pop("text/plain", None)
                data["text/html"] = f'<div class="lora-widget">{drawn}</div>'
            elif "text/latex" in data and "text/html" not in data:
                data["text/html"] = render_output(out)
    nb.metadata.pop("widgets", None)
    return nb


# ------------------------------------------------------------------------------------------------------ pages
TEMPLATE = r"""{%- extends 'index.html.j2' -%}
{% block html_head_js %}{% endblock html_head_js %}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{% block html_head_js_mathjax %}{% endblock html_head_js_mathjax %}
{% block html_head_js_mermaidjs %}{% endblock html_head_js_mermaidjs %}
{% block extra_css %}<style>
.lora-nav{display:flex;gap:1.5em;padding:.6em 1em;margin:0 0 1em;border-bottom:1px solid #ccc;font-family:sans-serif}
.lora-nav.bottom{border-top:1px solid #ccc;border-bottom:0;margin:2em 0 0}
.lora-note{font:italic .9em sans-serif;color:#555;padding:0 1em}
.lora-widget{padding:.3em 0}.lora-w-vbox{display:flex;flex-direction:column;gap:.2em}
.lora-w-hbox{display:flex;flex-direction:row;flex-wrap:wrap;align-items:center;gap:.5em}
.lora-w-row{display:flex;align-items:center;gap:.6em;font-family:sans-serif;font-size:.9em}
.lora-w-label{min-width:6em;font-family:sans-serif;font-size:.9em}.lora-w-value{font-family:monospace}
.lora-w-progress{width:18em}.lora-w-output img{max-width:100%}.lora-w-unknown{color:#777;font-style:italic}
math[display=block]{margin:.6em 0}
</style>{% endblock extra_css %}
{% block body_header %}{{ super() }}{{ resources.lora_nav }}<p class="lora-note">{{ resources.lora_note }}</p>
{% endblock body_header %}
{% block body_footer %}{{ resources.lora_nav | replace('class="lora-nav"', 'class="lora-nav bottom"') }}
{{ super() }}{% endblock body_footer %}
"""


class OfflineHTMLExporter(HTMLExporter):
    """The lab template with nothing fetched from a CDN: MathML equations, static widgets, navigation links."""

    math_errors: list[str]

    def __init__(self, **kw):
        super().__init__(extra_loaders=[DictLoader({"lora_offline.html.j2": TEMPLATE})],
                         template_file="lora_offline.html.j2", **kw)
        self.math_errors = []

    @pass_context
    def markdown2html(self, context, source):
        """nbconvert's own filter (attachments, anchors, highlighting) with the MathML renderer."""
        cell = context.get("cell", {})
        renderer = MathMLRenderer(escape=False, attachments=cell.get("attachments", {}), embed_images=self.embed_images,
                                  path=context.get("resources", {}).get("metadata", {}).get("path", ""),
                                  anchor_link_text=self.anchor_link_text,
                                  exclude_anchor_links=self.exclude_anchor_links, **self.lexer_options)
        renderer.errors = self.math_errors
        return MarkdownWithMath(renderer=renderer).render(source)


def nav_html(pages: list[tuple[Path, str]], i: int) -> str:
    """Previous / index / next links for page i (paths relative to the output folder)."""
    here = pages[i][0].parent

    def link(j: int, rel: str, text: str) -> str:
        href = os.path.relpath(pages[j][0], here) if j >= 0 else os.path.relpath("index.html", here)
        return f'<a rel="{rel}" href="{html.escape(Path(href).as_posix())}">{html.escape(text)}</a>'

    parts = [link(i - 1, "prev", f"← {pages[i - 1][1]}") if i > 0 else "<span></span>",
             link(-1, "index", "Index"),
             link(i + 1, "next", f"{pages[i + 1][1]} →") if i + 1 < len(pages) else "<span></span>"]
    return f'<nav class="lora-nav">{"".join(parts)}</nav>'


def title_and_goal(nb) -> tuple[str, str]:
    """First heading of the notebook and its learning objectives (for the index)."""
    title = next((line.lstrip("#").strip() for c in nb.cells if c.cell_type == "markdown"
                  for line in c.source.splitlines() if line.strip().startswith("#")), "")
    return title, "; ".join(g.rstrip(";. ") for g in objectives(nb))


def inline_html(markdown: str) -> str:
    """One line of markdown (an objective) as inline HTML, equations as MathML."""
    return re.sub(r"^\s*<p>|</p>\s*$", "", markdown_to_html(markdown))


@contextlib.contextmanager
def _kernel_env(fast: bool):
    """Environment the kernels inherit: the inline matplotlib backend (figures embedded as PNG, as in JupyterLab)
    and fast or full mode."""
    saved = {k: os.environ.get(k) for k in ("MPLBACKEND", "LORA_EDU_FAST")}
    os.environ.update(MPLBACKEND=INLINE_BACKEND, LORA_EDU_FAST="1" if fast else "0")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute(path: Path, timeout: int = 1200, fast: bool = False):
    nb = nbformat.read(path, as_version=4)
    with _kernel_env(fast):
        notebook_client(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                        resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def export(notebooks: list[Path], out: Path, reuse: Path | None = None, fast: bool = False,
           timeout: int = 1200) -> Path:
    """Run (or reuse) each notebook and write OUT/<name>.html, then OUT/index.html; returns the index path."""
    out.mkdir(parents=True, exist_ok=True)
    executed, rows = [], []
    for path in notebooks:
        rel = path.relative_to(ROOT / "notebooks") if path.is_relative_to(ROOT / "notebooks") else Path(path.name)
        cached = reuse / rel if reuse else None
        t0 = time.perf_counter()
        reused = cached is not None and cached.exists()
        nb = nbformat.read(cached, as_version=4) if reused else execute(path, timeout, fast)
        title, goal = title_and_goal(nb)
        executed.append((rel, nb))
        print(f"{rel}: {'read' if reused else 'ran'} in {time.perf_counter() - t0:.1f} s", flush=True)
        rows.append((rel.with_suffix(".html").as_posix(), title or rel.stem, goal))
    pages = [(Path(h), t) for h, t, _ in rows]
    exporter = OfflineHTMLExporter()
    for i, (rel, nb) in enumerate(executed):
        nb.metadata["title"] = pages[i][1]
        body, _ = exporter.from_notebook_node(static_outputs(nb), resources={
            "lora_nav": nav_html(pages, i), "lora_note": NOTE, "metadata": {"name": rel.stem}})
        target = out / pages[i][0]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body, encoding="utf-8")
        print(f"wrote {target}", flush=True)
    for err in exporter.math_errors:
        print(f"warning: {err}", file=sys.stderr)
    items = "\n".join(f'<li><a href="{html.escape(h)}">{html.escape(t)}</a>'
                      + (f"<br><small>{inline_html(g)}</small>" if g else "") + "</li>" for h, t, g in rows)
    index = out / "index.html"
    index.write_text(f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>lora-edu</title>
<style>body{{font-family:sans-serif;max-width:46em;margin:2em auto;line-height:1.5}}li{{margin:.6em 0}}</style>
</head><body><h1>lora-edu: LoRA from the matrix up</h1>
<p>The notebook series, executed and exported to HTML; these pages need no network. Run the notebooks
yourself, sliders and all, with <code>make lab</code>.</p>
<ol>{items}</ol></body></html>
""", encoding="utf-8")
    (out / "index.json").write_text(json.dumps(rows, indent=1))
    return index


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="output folder")
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/*.ipynb")
    ap.add_argument("--reuse", type=Path, default=None, help="folder of already-executed notebooks")
    ap.add_argument("--fast", action="store_true", default=os.environ.get("LORA_EDU_FAST") == "1",
                    help="run the notebooks in fast mode (LORA_EDU_FAST=1)")
    ap.add_argument("--timeout", type=int, default=1200, help="seconds one cell may run (default 1200)")
    args = ap.parse_args(argv)
    nbs = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    nbs = [p.resolve() for p in nbs]
    print(f"index: {export(nbs, args.out, args.reuse, args.fast, args.timeout)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
