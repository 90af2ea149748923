"""An experiment with ``requests:``: every method run honours the world's deletion requests one
after another, and is measured after each.

Per method run (``methods:`` × grid × seed):

- ``sequence: continue`` (the default): a model store (``OUT/stores/<run>``, ``unmem.store``)
  starts from the target, and request k is ``unmem forget`` of the world's k-th request on it:
  unlearned from the version before (EUL trains request k's layer and fuses it with the others),
  evaluated, and kept only if the request's acceptance checks pass (``requests.accept``) or
  ``requests.force`` is set;
- ``sequence: union``: request k unlearns the union of requests 1..k from the target, as a
  user who retrains from scratch at each request would (``OUT/runs/<run>/kNN``).

After request k the model is evaluated on that union (the world's split ``requestsKK``) against
a retain model trained without it (``OUT/models/retainNN`` when the union is a forget split,
else ``retain-requestsKK``; trained once, cached like every world model). ``sequence.json``
gathers, per run and request, the metrics on the union and each earlier request's own; the
report draws them against the request number (``unmem.report.sequence``).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from unmem.errors import UnmemError
from unmem.evaluation import EVAL_VERSION
from unmem.experiment.plan import RunPlan
from unmem.experiment.runner import Row, Runner, _model_key
from unmem.experiment.stages import Stage
from unmem.io import cache_key, read_json, write_jsonl
from unmem.results import SequenceData, SequenceRun, SequenceStep

PER_REQUEST = ("prob", "rouge", "truth_ratio", "exact_mem", "extraction_strength")
UNION_METRICS = (
    "model_utility",
    "general_ppl",
    "forget_quality",
    "forget_quality_log10",
    "forget_prob",
    "forget_truth_ratio",
    "mia_loss_auc",
    "retain_prob",
    "real_world_prob",
    "world_facts_prob",
)


def union_split(k: int) -> str:
    return f"requests{k:02d}"


def request_id(k: int) -> str:
    return f"request{k:02d}"


class SequenceRunner(Runner):
    """The stages of an experiment with ``requests:`` (see the module docstring)."""

    def _model_rows(self) -> tuple[Row, list[Row]]:
        self.count = self._request_count()
        self.split = union_split(self.count)
        target, retains = super()._model_rows()
        if self.exp.models.given:
            return target, retains
        return target, [
            Row("retain", "retain", self.union_retain(self.count), seed=self.exp.models.pretrain.seed)
        ]

    def _request_count(self) -> int:
        from unmem.data.world import World

        bench = self.exp.benchmark
        config = bench.world_config if bench.world_config is not None else World.load(bench.data_dir).config
        available = max(config.forget_sizes().values())
        return self.exp.config.requests.count or available  # type: ignore[union-attr]

    def exclude_split(self, k: int) -> str:
        """What the retain model of requests 1..k leaves out: the forget split when the union is
        one (its retain model is the usual one), else the union itself."""
        from unmem.data.world import WorldConfig

        bench = self.exp.benchmark
        config: WorldConfig = bench.world_config if bench.world_config is not None else self._world().config
        for pct, size in sorted(config.forget_sizes().items()):
            if size == k:
                return f"forget{pct:02d}"
        return union_split(k)

    def _world(self) -> Any:
        from unmem.data.world import World

        return World.load(self.data_dir)

    def union_retain(self, k: int) -> Path:
        from unmem.pretrain import retain_name

        return self.out.models / retain_name(self.exclude_split(k))

    # -- stages ------------------------------------------------------------------------------------

    def stages(self) -> list[Stage]:
        stages = self.setup_stages()
        for plan in self.exp.runs:
            if plan.sequence == "continue":
                stages.append(
                    Stage(f"store:{plan.name}", "data", f"store for {plan.name}", self._store_fn(plan))
                )
            for k in range(1, self.count + 1):
                label = f"{plan.name}: request {k} of {self.count}"
                stages.append(Stage(self.request_stage(plan, k), "unlearn", label, self._request_fn(plan, k)))
                stages.append(
                    Stage(self.seqeval_stage(plan, k), "eval", f"evaluate {label}", self._seqeval_fn(plan, k))
                )
        stages.append(Stage("report", "report", "report", self.report))
        return stages

    def _store_fn(self, plan: RunPlan) -> Any:
        return lambda: self.make_store(plan)

    def _request_fn(self, plan: RunPlan, k: int) -> Any:
        return lambda: self.request(plan, k)

    def _seqeval_fn(self, plan: RunPlan, k: int) -> Any:
        return lambda: self.evaluate_step(plan, k)

    @staticmethod
    def request_stage(plan: RunPlan, k: int) -> str:
        return f"request:{plan.name}:{k:02d}"

    @staticmethod
    def seqeval_stage(plan: RunPlan, k: int) -> str:
        return f"seqeval:{plan.name}:{k:02d}"

    def models(self) -> bool:
        """The target and the retain model of every union of requests (each trained once, cached)."""
        worked = super().models()
        if not self.exp.models.given:
            for k in range(1, self.count + 1):
                self.keys[f"model:retain-{k}"] = _model_key(self.union_retain(k))
        return worked

    def wanted_models(self) -> list[tuple[Path, str | None, Any]]:
        pretrain = self.exp.models.pretrain
        wanted: dict[Path, tuple[Path, str | None, Any]] = {
            self.target.model: (self.target.model, None, pretrain)
        }
        for k in range(1, self.count + 1):
            wanted.setdefault(self.union_retain(k), (self.union_retain(k), self.exclude_split(k), pretrain))
        return list(wanted.values())

    def _train_world_models(self) -> bool:
        from unmem.pretrain import is_current, train_world_models

        world, pretrain = self._world(), self.exp.models.pretrain
        stale = [
            (path, split)
            for path, split, config in self.wanted_models()
            if not is_current(world, path, split, config)
        ]
        if not stale:
            return False
        for path, _ in stale:
            if (path / "pretrain.json").is_file():
                self._stale("models", path)
        splits = [split for _, split in stale if split is not None]
        train_world_models(world, self.out.models, splits, pretrain, overwrite=True)
        return True

    # -- keys --------------------------------------------------------------------------------------

    def run_inputs(self, plan: RunPlan) -> dict[str, Any]:
        """Everything a run's sequence is made from: its settings, the target, data and requests."""
        requests = self.exp.config.requests
        inputs = {
            "config": plan.config.model_dump(mode="json"),
            "sequence": plan.sequence,
            "target": self.keys.get("model:target"),
            "data": self.keys.get("data"),
            "requests": requests.model_dump(mode="json") if requests else None,
            "eval": self._eval_settings(),
        }
        return inputs | ({"force": plan.force} if plan.force is not None else {})  # the entry's own

    def _eval_settings(self) -> dict[str, Any]:
        return self.exp.config.eval.model_dump(
            mode="json", exclude={"threads", "batch_size", "trust_remote_code"}
        )

    def request_key(self, plan: RunPlan, k: int) -> str:
        return cache_key("request", run=self.run_inputs(plan), k=k)

    def seqeval_inputs(self, plan: RunPlan, k: int) -> dict[str, Any]:
        return {
            "v": EVAL_VERSION,
            "request": self.request_key(plan, k),
            "retain": self.keys.get(f"model:retain-{k}"),
            "split": union_split(k),
            "eval": self._eval_settings(),
        }

    # -- the stages' work ------------------------------------------------------------------------

    def make_store(self, plan: RunPlan) -> bool:
        from unmem.store import init_store

        path = self.out.store(plan.name)
        if not self._begin(
            f"store:{plan.name}", "store", self.run_inputs(plan), path, (path / "store.json").is_file()
        ):
            return False
        init_store(self.target.model, path, reference=True)
        return True

    def request(self, plan: RunPlan, k: int) -> bool:
        stage_id = self.request_stage(plan, k)
        key = self.request_key(plan, k)
        self.keys[stage_id] = key
        if plan.sequence == "union":
            return self._retrain_union(plan, k, key)
        if self._ledger_entry(plan, k) is not None:
            return False
        entry = self.log.record(stage_id)
        entry.update({"key": None, "pending_key": key, "inputs": {"run": self.run_inputs(plan), "k": k}})
        self.log.save()
        from unmem.evaluation.orchestrator import torch_threads
        from unmem.store import forget
        from unmem.store.request import RequestSpec, resolve

        requests = self.exp.config.requests
        settings = plan.config.model_dump(mode="json", exclude_none=True)
        eval_config = self.exp.config.eval.model_copy(
            update={"metrics": ["tofu", "mia", "extraction", "utility"]}
        )
        spec = RequestSpec(
            id=request_id(k),
            benchmark="world",
            data=str(self.data_dir),
            ids=[self._world().requests()[k - 1]],
            method=plan.method,
            settings=settings,
            accept=requests.accept if requests else {},
            eval=eval_config,
            note=f"experiment {self.exp.config.name}, run {plan.name}",
        )
        request = resolve(spec, self.out.root, self.exp.source or self.out.root, None)
        with torch_threads(self.exp.config.threads):
            outcome = forget(self.out.store(plan.name), request, force=self._force(plan), log=self._say)
        self._say(f"{plan.name}, request {k}: {outcome.message}")
        return True

    def _force(self, plan: RunPlan) -> bool:
        requests = self.exp.config.requests
        return plan.force if plan.force is not None else bool(requests and requests.force)

    def _say(self, line: str) -> None:
        self.console.print(line, highlight=False, soft_wrap=True)

    def _ledger_entry(self, plan: RunPlan, k: int) -> dict[str, Any] | None:
        """The store's ledger entry of request k, if it was answered (honoured, refused or skipped)."""
        from unmem.store import Store

        path = self.out.store(plan.name)
        if not (path / "store.json").is_file():
            return None
        entries = Store.open(path).checked_entries()
        found = [e for e in entries if e["kind"] == "request" and e["request"]["id"] == request_id(k)]
        return found[-1] if found else None

    def union_file(self, k: int) -> Path:
        """Requests 1..k as one QA file (what a retrain on the union unlearns)."""
        from unmem.data.benchmarks import load_world

        path = self.out.requests / f"{union_split(k)}.jsonl"
        if not path.is_file():
            write_jsonl(path, load_world(self.data_dir, union_split(k)).qa["forget"])
        return path

    def _retrain_union(self, plan: RunPlan, k: int, key: str) -> bool:
        from unmem.data.benchmarks import get_benchmark
        from unmem.evaluation.orchestrator import torch_threads
        from unmem.experiment.plan import with_holdout
        from unmem.train import unlearn

        run_dir = self.out.run(f"{plan.name}/k{k:02d}")
        stage_id = self.request_stage(plan, k)
        if not self._begin(stage_id, "request", {"request": key}, run_dir.root, run_dir.summary.is_file()):
            return False
        split = f"forget{max(self._world().config.forget_sizes()):02d}"
        files = get_benchmark("world").unlearn_files(self.data_dir, split)
        with torch_threads(self.exp.config.threads):
            unlearn(
                self.target.model, self.union_file(k), run_dir.root, with_holdout(plan.config, files.holdout),
                retain_path=files.retain, overwrite=True, resume=True,
            )  # fmt: skip
        return True

    def step_model(self, plan: RunPlan, k: int) -> Path:
        """The model after request k: the store's current version then, or the union's retrain."""
        if plan.sequence == "union":
            return self.out.run(f"{plan.name}/k{k:02d}").model
        from unmem.store import Store

        entry = self._ledger_entry(plan, k)
        if entry is None:
            raise UnmemError(f"{plan.name}: request {k} has no ledger entry in {self.out.store(plan.name)}")
        store = Store.open(self.out.store(plan.name))
        return store.versions(store.checked_entries())[entry["version_after"]].path

    def evaluate_step(self, plan: RunPlan, k: int) -> bool:
        from unmem.evaluation import evaluate
        from unmem.results import EvalSummary

        if self.request_stage(plan, k) in self.failed:
            raise UnmemError(f"not evaluated: request {k} of {plan.name} failed")
        stage_id = self.seqeval_stage(plan, k)
        eval_dir = self.out.eval(f"{plan.name}/k{k:02d}")
        self._begin(stage_id, "seqeval", self.seqeval_inputs(plan, k), eval_dir.root, complete=False)
        evaluate(
            self.step_model(plan, k),
            benchmark="world",
            data=self.data_dir,
            split=union_split(k),
            out_dir=eval_dir.root,
            retain_model=None if self.exp.models.given else self.union_retain(k),
            retain_cache_dir=self.out.retain_cache,
            config=self.exp.config.eval,
        )
        summary = EvalSummary.read(eval_dir.summary)
        return not (summary.cached and all(summary.cached.values()))

    # -- what changed since the last run -----------------------------------------------------------

    def eval_rows(self) -> list[Row]:
        return [*self.retains, self.target]

    def changes(self) -> dict[str, str]:
        changed = super().changes()
        if "data" in changed or "models" in changed:
            cause = "data" if "data" in changed else "models"
            for plan in self.exp.runs:
                if self.out.store(plan.name).exists():
                    changed[f"store:{plan.name}"] = f"after {cause}"
                for k in range(1, self.count + 1):
                    if self.out.eval(f"{plan.name}/k{k:02d}").root.exists():
                        changed[self.seqeval_stage(plan, k)] = f"after {cause}"
            return changed
        if "model:target" not in self.keys:
            return changed
        for plan in self.exp.runs:
            outputs = {f"store:{plan.name}": self.out.store(plan.name)}
            if plan.sequence == "continue":
                self._compare(f"store:{plan.name}", "store", self.run_inputs(plan), outputs, changed)
            for k in range(1, self.count + 1):
                if plan.sequence == "union":
                    stage = self.request_stage(plan, k)
                    outputs[stage] = self.out.run(f"{plan.name}/k{k:02d}").root
                    self._compare(stage, "request", {"request": self.request_key(plan, k)}, outputs, changed)
                stage = self.seqeval_stage(plan, k)
                outputs[stage] = self.out.eval(f"{plan.name}/k{k:02d}").root
                if f"model:retain-{k}" not in self.keys and not self.exp.models.given:
                    retain = self.union_retain(k)
                    if retain.is_dir():
                        self.keys[f"model:retain-{k}"] = _model_key(retain)
                self._compare(stage, "seqeval", self.seqeval_inputs(plan, k), outputs, changed)
        return changed

    # -- report data -------------------------------------------------------------------------------

    def report(self) -> bool:
        self.sequence_data().write(self.out.sequence_data)
        return super().report()

    def report_rows(self) -> list[Any]:
        """Target, retain model, then every run as it stands after the last request."""
        rows = super().report_rows()
        for row in rows:
            if row.kind == "method":
                plan = next(p for p in self.exp.runs if p.name == row.id)
                row.eval_dir = self.out.relative(self.out.eval(f"{plan.name}/k{self.count:02d}").root)
                row.run_dir = None
                row.model = str(self.out.store(plan.name)) if plan.sequence == "continue" else row.model
                failed = [
                    s for s in self.failed if s.startswith((f"request:{plan.name}:", f"seqeval:{plan.name}:"))
                ]
                if failed:
                    row.status, row.error = "failed", self._error(failed[0])
        return rows

    def sequence_data(self) -> SequenceData:
        world = self._world()
        data = SequenceData(
            requests=world.requests()[: self.count],
            retain_models={
                str(k): None if self.exp.models.given else str(self.union_retain(k))
                for k in range(1, self.count + 1)
            },
        )
        target_eval = self.out.eval(self.target.name)
        if target_eval.summary.is_file():
            data.target = self._step(self.count, "target", target_eval.root, world)
        for plan in self.exp.runs:
            run = SequenceRun(name=plan.name, method=plan.method, mode=plan.sequence)
            if plan.sequence == "continue":
                run.store = self.out.relative(self.out.store(plan.name))
            for k in range(1, self.count + 1):
                eval_dir = self.out.eval(f"{plan.name}/k{k:02d}")
                if not eval_dir.summary.is_file():
                    continue
                step = self._step(k, "retrained", eval_dir.root, world)
                self._add_training(step, plan, k)
                run.steps.append(step)
            data.runs.append(run)
        if self.exp.models.given:
            data.not_computed["forget_quality"] = (
                "no retain model per union of requests (the models are given)"
            )
        return data

    def _step(self, k: int, outcome: str, eval_root: Path, world: Any) -> SequenceStep:
        from unmem.results import EvalSummary

        summary = EvalSummary.read(eval_root / "summary.json")
        step = SequenceStep(k=k, outcome=outcome, metrics={m: summary.metrics.get(m) for m in UNION_METRICS})
        step.per_request = per_request_metrics(eval_root, world.requests()[:k])
        return step

    def _add_training(self, step: SequenceStep, plan: RunPlan, k: int) -> None:
        if plan.sequence == "union":
            summary = read_json(self.out.run(f"{plan.name}/k{k:02d}").summary)
            step.seconds, step.steps = summary.get("train_seconds"), summary.get("steps")
            step.stop_step = summary.get("published_step")
            return
        entry = self._ledger_entry(plan, k)
        if entry is None:
            return
        step.outcome, step.version = entry["outcome"], entry["version_after"]
        timing = entry.get("timing") or {}
        step.seconds = (timing.get("unlearn_s") or 0.0) + (timing.get("fuse_s") or 0.0) if timing else None
        step.steps = (entry.get("training") or {}).get("steps")
        step.stop_step = (entry.get("training") or {}).get("published_step")
        step.checks = entry.get("checks") or []


def per_request_metrics(eval_root: Path, entities: list[str]) -> dict[str, dict[str, float | None]]:
    """Each request's own forget metrics (means over its QA) and its LOSS membership AUC against
    the whole holdout set, from the evaluation's per-sample rows."""
    from unmem.io import iter_jsonl
    from unmem.metrics.mia import membership_auc

    tofu: dict[str, list[dict[str, Any]]] = {}
    path = eval_root / "per_sample" / "tofu.jsonl"
    if path.is_file():
        for _, row in iter_jsonl(path):
            if row.get("set") == "forget":
                tofu.setdefault(row.get("entity_id"), []).append(row)
    loss: dict[str, list[float]] = {}
    holdout: list[float] = []
    path = eval_root / "per_sample" / "mia.jsonl"
    if path.is_file():
        for _, row in iter_jsonl(path):
            if row.get("set") == "holdout":
                holdout.append(row["loss"])
            elif row.get("set") == "forget":
                loss.setdefault(row.get("entity_id"), []).append(row["loss"])
    found: dict[str, dict[str, float | None]] = {}
    for j, entity in enumerate(entities, start=1):
        rows = tofu.get(entity) or []
        values: dict[str, float | None] = {
            name: _mean([r.get(name) for r in rows]) for name in PER_REQUEST if rows
        }
        if loss.get(entity) and holdout:
            values["mia_loss_auc"] = membership_auc(loss[entity], holdout).value
        found[str(j)] = values
    return found


def _mean(values: list[Any]) -> float | None:
    numbers = [float(v) for v in values if v is not None]
    return statistics.fmean(numbers) if numbers else None
