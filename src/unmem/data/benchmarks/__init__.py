"""Evaluation data layouts: the built-in world, TOFU and MUSE as published, plain files.

Importing this package imports every loader module in it; each registers itself
(``registry.register_benchmark``). ``load_benchmark(name, dir, split)`` returns an
``EvalData``. The layouts, their files and fields: docs/data-format.md.
"""

import importlib
import pkgutil

from unmem.data.benchmarks.base import KNOWMEM_SHOT_POOL, EvalData, UnlearnFiles, nlu_items
from unmem.data.benchmarks.registry import all_benchmarks, get_benchmark, load_benchmark, register_benchmark

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "registry"):
        importlib.import_module(f"{__name__}.{_module.name}")

from unmem.data.benchmarks.muse import load_muse  # noqa: E402
from unmem.data.benchmarks.tofu import load_tofu  # noqa: E402
from unmem.data.benchmarks.world import load_world  # noqa: E402

__all__ = [
    "KNOWMEM_SHOT_POOL",
    "EvalData",
    "UnlearnFiles",
    "all_benchmarks",
    "get_benchmark",
    "load_benchmark",
    "load_muse",
    "load_tofu",
    "load_world",
    "nlu_items",
    "register_benchmark",
]
