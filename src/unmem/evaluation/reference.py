"""The retain reference: the retain model's numbers that forget quality, PrivLeak and the MIA
details compare against, per family.

``retain_model`` evaluates the retain model once per family and caches the numbers in
``<cache_dir>/<key>/<family>.json`` (key = retain weights + data + dtype + options).
``unmem eval`` keeps the cache inside its output unless ``--retain-cache DIR`` names a
shared one; the experiment runner shares ``eval/.retain_cache`` between its rows. ``retain_results`` reads a previous ``unmem eval --out`` of the
retain model instead (used only when no ``retain_model`` is given); its data must be the
data evaluated now.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from unmem.errors import UnmemError, input_error
from unmem.evaluation.cache import dtype_name, model_hash
from unmem.evaluation.options import EVAL_VERSION
from unmem.evaluation.registry import EvalInputs, RetainReference, all_families
from unmem.evaluation.session import ModelSession
from unmem.io import cache_key, hash_files, iter_jsonl, json_safe, read_json, write_json
from unmem.models import load_model, resolve_model_dir
from unmem.results import EvalSummary


def results_dir(path: Path) -> tuple[Path, list[Path]]:
    """An eval directory from itself, its summary.json or one of its per_sample files."""
    if path.is_dir():
        root = path
    elif path.is_file() and path.parent.name == "per_sample":
        root = path.parent.parent
    elif path.is_file():
        root = path.parent
    else:
        raise UnmemError(f"{path}: retain results not found (give an `unmem eval` --out directory)")
    files = [
        p for p in (root / "summary.json", *sorted((root / "per_sample").glob("*.jsonl"))) if p.is_file()
    ]
    if not files:
        raise UnmemError(f"{root}: no summary.json or per_sample/*.jsonl; is it an `unmem eval` output?")
    return root, files


def per_sample_column(path: Path, set_name: str, column: str) -> list[float] | None:
    """One column of the rows of ``set_name`` in a per-sample file, in index order (None: no rows)."""
    if not path.is_file():
        return None
    values: dict[int, float] = {}
    for lineno, row in iter_jsonl(path):
        if row.get("set") != set_name:
            continue
        if column not in row or "index" not in row:
            raise input_error(path, "missing in a retain-results row", line=lineno, field=column)
        values[int(row["index"])] = float("nan") if row[column] is None else float(row[column])
    return [values[i] for i in sorted(values)] if values else None


def nan_list(values: list[Any] | None) -> list[float] | None:
    return None if values is None else [float("nan") if v is None else float(v) for v in values]


class RetainSource:
    """Where the retain reference comes from; its fingerprint is known without evaluating."""

    def __init__(
        self,
        *,
        retain_model: str | Path | None,
        retain_results: str | Path | None,
        inputs: EvalInputs,
        cache_dir: Path,
    ) -> None:
        self.inputs = inputs
        self.model_dir = resolve_model_dir(retain_model) if retain_model is not None else None
        self.path: str | None = None
        self.fingerprint: str | None = None
        self.cache_dir: Path | None = None
        self.results: dict[str, dict[str, Any] | None] = {}
        config = inputs.config
        # Both given (the experiment runner passes both): the model wins, its numbers are exact.
        if self.model_dir is not None:
            self.path = str(self.model_dir.resolve())
            self.fingerprint = cache_key(
                "retain-reference",
                v=EVAL_VERSION,
                model=model_hash(self.model_dir),
                data=inputs.data.fingerprint(),
                dtype=dtype_name(config.device, config.dtype),
                options=asdict(config.options),
            )
            self.cache_dir = cache_dir / self.fingerprint
        elif retain_results is not None:
            root, files = results_dir(Path(retain_results))
            self.path, self.fingerprint = str(root.resolve()), hash_files(files)
            self.results = self._read_results(root)  # cheap: fails before any model loads

    def _read_results(self, root: Path) -> dict[str, dict[str, Any] | None]:
        summary_path = root / "summary.json"
        if summary_path.is_file():
            summary = EvalSummary.read(summary_path)
            if (
                summary.data_fingerprint is not None
                and summary.data_fingerprint != self.inputs.data.fingerprint()
            ):
                raise UnmemError(
                    f"{summary_path}: the retain results were computed on other data "
                    f"(benchmark {summary.benchmark}, split {summary.split}, "
                    f"max_samples {summary.max_samples}); evaluate the retain model with the same "
                    "--data/--split/--max-samples, or pass --retain-model"
                )
        found = {
            name: spec.retain.from_results(root, self.inputs.data)
            for name, spec in all_families().items()
            if spec.retain is not None
        }
        if not any(found.values()):
            raise UnmemError(
                f"{root}: no retain numbers found: needs per_sample/tofu.jsonl (forget truth_ratio), "
                "per_sample/muse.jsonl (privleak min_k_40) or summary.json with MIA AUCs"
            )
        return found

    def load(self, families: list[str]) -> dict[str, RetainReference | None]:
        """The reference of each family that has retain hooks (None: no retain source, or no numbers)."""
        hooks = {
            name: spec.retain for name, spec in all_families().items() if name in families and spec.retain
        }
        if self.path is None:
            return dict.fromkeys(hooks)
        if self.model_dir is None or self.cache_dir is None:  # from a previous evaluation's results
            return {
                name: RetainReference(self.path, values) if (values := self.results.get(name)) else None
                for name in hooks
            }
        out: dict[str, RetainReference | None] = {}
        for name in hooks:
            cached = self.cache_dir / f"{name}.json"
            if cached.is_file():
                out[name] = RetainReference(self.path, read_json(cached))
        missing = {name: hook for name, hook in hooks.items() if name not in out}
        if missing:
            config = self.inputs.config
            model, tokenizer = load_model(
                self.model_dir,
                device=config.device,
                dtype=config.dtype,
                trust_remote_code=config.trust_remote_code,
            )
            session = ModelSession(model, tokenizer, self.inputs.data, config.options, config.batch_size)
            for name, hook in missing.items():
                values = json_safe(hook.from_model(session))
                write_json(self.cache_dir / f"{name}.json", values)
                out[name] = RetainReference(self.path, values)
        return out
