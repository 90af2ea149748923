"""Registry of benchmark layouts: name -> loader (``EvalData``) and the files unlearning trains on.

A loader module in ``unmem/data/benchmarks/`` calls :func:`register_benchmark` at import
time and ``unmem.data.benchmarks`` imports every module of the package, so adding a
layout is adding one file (see ``files.py``, the smallest).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from unmem.data.benchmarks.base import EvalData, UnlearnFiles
from unmem.errors import UnmemError

Loader = Callable[[Path, str], EvalData]
UnlearnFilesFn = Callable[[Path, str], UnlearnFiles]


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    load: Loader  # (data directory, split) -> EvalData; raises UnmemError naming file, line and field
    unlearn_files: UnlearnFilesFn  # (data directory, split) -> the QA files `unmem unlearn` trains on
    description: str
    default_split: str = "forget10"
    order: int = 100  # listing order (help texts, error messages): the built-in layouts first


_BENCHMARKS: dict[str, BenchmarkSpec] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def register_benchmark(
    name: str,
    load: Loader,
    unlearn_files: UnlearnFilesFn,
    *,
    description: str,
    default_split: str = "forget10",
    order: int = 100,
) -> BenchmarkSpec:
    """Register a layout; rejects malformed and duplicate names so two files cannot collide."""
    if not _NAME.match(name):
        raise ValueError(f"benchmark name {name!r} must be lower_snake_case (src/unmem/data/benchmarks/)")
    if name in _BENCHMARKS:
        raise ValueError(f"benchmark {name!r} is registered twice; rename one in src/unmem/data/benchmarks/")
    spec = BenchmarkSpec(name, load, unlearn_files, description, default_split, order)
    _BENCHMARKS[name] = spec
    return spec


def all_benchmarks() -> dict[str, BenchmarkSpec]:
    from unmem.data import benchmarks  # noqa: F401  (imports every loader module)

    return dict(sorted(_BENCHMARKS.items(), key=lambda item: (item[1].order, item[0])))


def get_benchmark(name: str) -> BenchmarkSpec:
    known = all_benchmarks()
    if name not in known:
        raise UnmemError(f"unknown benchmark '{name}'; known: {', '.join(known)}")
    return known[name]


def load_benchmark(benchmark: str, path: str | Path, split: str = "forget10") -> EvalData:
    return get_benchmark(benchmark).load(Path(path), split)
