"""report.html: one self-contained page (plots embedded as data URIs, so it opens offline)."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence

from unmem.report.plots import bar_plot, have_matplotlib, loss_plot, pareto_plot, safe_plot
from unmem.report.rows import DASH, TRAIN_COLUMNS, Variant, finite
from unmem.report.tables import fmt, fmt_ci, row_label, short_label, status_text

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 4px; } h2 { font-size: 1.15em; margin-top: 28px; }
.meta, .note { color: #555; font-size: 0.9em; }
.scroll { overflow-x: auto; border: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.82em; white-space: nowrap; }
th, td { padding: 4px 8px; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f5f5f5; position: sticky; top: 0; }
td:first-child, th:first-child { text-align: left; position: sticky; left: 0; background: inherit; }
tr { background: #fff; }
thead th:first-child { background: #f5f5f5; z-index: 1; }
th.left, td.left { text-align: left; }
tr.retain { background: #e8f5e9; font-weight: 600; }
tr.target { background: #fdecea; }
tr.failed td { color: #999; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
.grid img { border: 1px solid #eee; }
code { background: #f5f5f5; padding: 1px 4px; }
"""

# Marks the page for scripts/screenshot_report.py: every image decoded, no script errors.
CHECK_SCRIPT = """
(function () {
  var root = document.documentElement;
  window.addEventListener("error", function (event) {
    root.dataset.pageErrors = (root.dataset.pageErrors || "") + (event.message || "resource failed") + "; ";
  }, true);
  window.addEventListener("load", function () {
    var images = Array.prototype.slice.call(document.images);
    root.dataset.imagesOk = String(images.every(function (img) { return img.complete && img.naturalWidth > 0; }));
    root.dataset.imagesCount = String(images.length);
    root.dataset.pageHeight = String(document.documentElement.scrollHeight);
  });
})();
"""


def _img(data: str, alt: str) -> str:
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def render_html(
    variants: Sequence[Variant],
    columns: Sequence[str],
    title: str,
    meta: list[str],
    several: bool,
    notes: Sequence[str] = (),
    extra: str = "",
) -> str:
    """The page; ``extra`` is HTML of other views (the robustness audit, the sequence of deletion
    requests), placed before the runs."""
    esc = html.escape
    head_cells = "".join(f"<th>{esc(c)}</th>" for c in ("row", "n", *columns, *TRAIN_COLUMNS))
    body = []
    for v in variants:
        classes = [v.kind] + (["failed"] if status_text(v) != "done" else [])
        label = esc(row_label(v, several))
        if status_text(v) != "done":
            label += f' <span class="note">({esc(status_text(v))})</span>'
        cells = "".join(
            f'<td title="{esc(_ci_title(v, c))}">{esc(fmt_ci(v, c))}</td>' for c in (*columns, *TRAIN_COLUMNS)
        )
        body.append(f'<tr class="{" ".join(classes)}"><td>{label}</td><td>{v.n}</td>{cells}</tr>')
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{CSS}</style><script>{CHECK_SCRIPT}</script></head><body>",
        f"<h1>{esc(title)}</h1>",
        "".join(f'<div class="meta">{esc(line)}</div>' for line in meta),
        "<h2>Results</h2>",
        '<p class="note">Green: the retain model, the gold standard (never trained on the forget set). '
        "Red: the target, where unlearning starts. Cells: mean over seeds, ± half the 95% confidence "
        f"interval when there are several seeds (hover for the interval); {DASH} = not computed.</p>",
        f'<div class="scroll"><table><thead><tr>{head_cells}</tr></thead><tbody>{"".join(body)}</tbody></table></div>',
        *(f'<p class="note">{esc(note)}</p>' for note in notes),
    ]
    pareto = safe_plot(pareto_plot, variants, several)
    parts.append("<h2>Forgetting vs utility</h2>")
    parts.append(
        _img(pareto, "forget quality against model utility")
        if pareto
        else '<p class="note">Nothing to plot: needs forget_quality (a retain model) and model_utility '
        "(the tofu metric family).</p>"
    )
    bars = [(c, safe_plot(bar_plot, variants, c, several)) for c in (*columns, *TRAIN_COLUMNS)]
    bars = [(c, b) for c, b in bars if b]
    if bars:
        parts.append("<h2>Per metric</h2>")
        if any(v.kind == "retain" for v in variants):
            parts.append('<p class="note">Dashed green line: the retain model.</p>')
        parts.append('<div class="grid">' + "".join(_img(b, c) for c, b in bars) + "</div>")
    losses = [(v, safe_plot(loss_plot, v, several)) for v in variants if v.kind == "method"]
    losses = [(v, p) for v, p in losses if p]
    if losses:
        parts.append("<h2>Training loss</h2>")
        parts.append('<div class="grid">' + "".join(_img(p, v.label) for v, p in losses) + "</div>")
    if not have_matplotlib():
        parts.append(
            '<p class="note">No plots: install matplotlib (<code>pip install matplotlib</code>).</p>'
        )
    if extra:
        parts.append(extra)
    parts.append("<h2>Runs</h2>")
    parts.append(_runs_table(variants, several))
    parts.append('<p class="note">Made by <code>unmem report</code>.</p></body></html>')
    return "\n".join(parts) + "\n"


def _ci_title(variant: Variant, column: str) -> str:
    low, high = variant.low.get(column), variant.high.get(column)
    if low is None or high is None:
        return f"n={variant.n}"
    return f"95% CI [{fmt(low)}, {fmt(high)}], n={variant.n}"


def _runs_table(variants: Sequence[Variant], several: bool) -> str:
    esc = html.escape
    rows = []
    for v in variants:
        for r in v.rows:
            if r.kind != "method":
                continue
            settings = ", ".join(f"{k}={json.dumps(val)}" for k, val in r.config.items())
            detail = r.error or r.train.get("stop_reason") or ""
            rows.append(
                f"<tr><td>{esc(short_label(v, several))}</td><td>{esc(str(r.seed))}</td><td>{esc(r.status)}</td>"
                f"<td>{esc(str(r.train.get('steps', DASH)))}</td><td>{esc(fmt(finite(r.train.get('train_seconds'))))}</td>"
                f'<td class="left">{esc(settings)}</td><td class="left">{esc(str(detail))}</td></tr>'
            )
    if not rows:
        return '<p class="note">No method runs.</p>'
    head = "".join(f"<th>{h}</th>" for h in ("run", "seed", "status", "steps", "seconds"))
    head += '<th class="left">settings</th><th class="left">notes</th>'
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
