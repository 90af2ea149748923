"""Experiments: one YAML file -> data, models, every method run, evaluation, report.

Run: ``unmem run src/unmem/configs/demo.yaml --out runs/demo`` (or ``unmem demo``).

The file (every section is checked, unknown keys are errors)::

    name: demo
    # The data: the built-in world, generated here ...
    world: {preset: default, seed: 0}      # WorldConfig fields; or `data: DIR` (an existing world)
    # ... or a layout as published: `benchmark: tofu|muse|files` and `data: DIR`.
    # The models: trained here on the world (PretrainConfig fields; retain_seeds: more retain
    # models, for the noise floor) ...
    models: {preset: small, seed: 0, retain_seeds: [0, 1, 2]}
    # ... or yours: `target: DIR` and `retain: DIR`, a list of DIRs, or nothing.
    split: forget10                        # default: the benchmark's (MUSE and files: forget)
    seeds: [0]                             # unlearning seeds; several -> mean ± 95% CI in the report
    defaults: {lr: 1e-4, epochs: 5}        # UnlearnConfig fields shared by every method
    methods:
      - {method: ga}
      - {method: npo, method_args: {beta: 0.1}, lr: 1e-4}
      - {method: flat, method_args: {divergence: [kl, tv]}}   # a list where one value is expected = grid
    eval: {metrics: [tofu, muse, mia], batch_size: 32, max_samples: null, options: {max_new_tokens: 64}}
    tracking: [tensorboard]                # accelerate trackers; ones not installed are skipped

A method entry may set ``name:`` (the run's label, needed when one method appears twice).
Relative paths (``data``, ``world_dir``, ``target``, ``retain``) are read from the YAML
file's folder. Without a retain model forget quality and PrivLeak are not computed and the
report says why; with several, the report shows the noise floor (forget quality between
every pair of retain models).

Everything is validated before any work starts: an error is one line naming the file,
the line and the key path (``exp.yaml:14: field 'methods[2].method_args.beta': ...``).

Modules: ``config`` (the file's schema, YAML, errors), ``sources`` (data and models),
``plan`` (methods -> runs), ``loader`` (``load_experiment``), ``stages`` (``state.json``),
``runner`` (``run_experiment``), ``tracking``. The directory layout:
``unmem.layout.ExperimentDir``; what the report reads: ``unmem.results.ReportData``.
"""

from unmem.experiment.config import format_keypath, line_of
from unmem.experiment.loader import Experiment, load_experiment, shipped_config
from unmem.experiment.plan import RunPlan
from unmem.experiment.runner import run_experiment
from unmem.experiment.tracking import make_trackers

__all__ = [
    "Experiment",
    "RunPlan",
    "format_keypath",
    "line_of",
    "load_experiment",
    "make_trackers",
    "run_experiment",
    "shipped_config",
]
