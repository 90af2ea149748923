"""Results -> ``results.csv``, ``results_mean.csv``, ``report.md`` and a self-contained ``report.html``.

Run: ``unmem report runs/demo`` (one experiment) or ``unmem report runs/a runs/b --out cmp``.

Input is an experiment directory (``unmem run``'s ``--out``): its ``report_data.json``
lists the rows (target, retain, one per method run) and where their evaluation
(``eval/<row>/summary.json``, docs/data-format.md) and training (``runs/<row>/summary.json``,
``train_log.jsonl``) live. Without it the rows are collected from those folders.

Rows that differ only in the seed form one *variant*; the tables show its mean, and with
several seeds the 95% Student-t interval (:func:`unmem.metrics.stats.mean_ci`).
The retain model is the gold standard (it never saw the forget set); the target is
where unlearning starts. The HTML embeds its PNG plots as data URIs: it opens offline.

The report folder appears whole (built aside, then renamed into place) and replaces only
an earlier report: a folder holding anything besides the report's files is refused.

One file per view: ``rows`` (reading and grouping), ``tables`` (CSV, Markdown, terminal),
``plots``, ``page`` (HTML), ``selection`` (sweeps), ``build`` (the entry point).
"""

from unmem.report.build import build_report
from unmem.report.rows import Row, Variant, aggregate, collect
from unmem.report.tables import fmt

__all__ = ["Row", "Variant", "aggregate", "build_report", "collect", "fmt"]
