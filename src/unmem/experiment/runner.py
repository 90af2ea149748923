"""Run an experiment's stages in its directory: data, models, evaluations, unlearning runs, report.

Every stage computes a key from its resolved inputs (``unmem.io.cache_key``) and is skipped
when its output exists and was made from that key; unlearning resumes from its checkpoints
and evaluation from its finished metric families. Before any work, the stages whose output
was made from other inputs (an edited file) are listed with what changed: that is an error
unless ``--overwrite`` is given, which redoes just those stages (and says so). A method run
that fails is recorded and the others go on. While it runs, ``OUT.lock`` names its owner.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from rich.console import Console

from unmem.errors import UnmemError
from unmem.evaluation import EVAL_VERSION, evaluate
from unmem.evaluation.reference import per_sample_column
from unmem.experiment.loader import Experiment, load_experiment
from unmem.experiment.plan import RunPlan, with_holdout
from unmem.experiment.stages import (
    Stage,
    StageLog,
    changed_error,
    describe_change,
    experiment_inputs,
    only_new_defaults,
)
from unmem.experiment.tracking import make_trackers, track_row
from unmem.io import (
    cache_key,
    check_not_an_input,
    exclusive_lock,
    first_difference,
    hash_files,
    read_json,
    write_text_atomic,
)
from unmem.layout import ExperimentDir
from unmem.results import EvalSummary, NoiseFloor, ReportData, ReportRow, RetainPair, RunSummary

NO_RETAIN = "the experiment has no retain model (add `retain:` to compare with one)"
RETAIN_METRICS = ("forget_quality", "forget_quality_log10", "forget_ks_stat", "privleak")


@dataclass
class Row:
    """A model the experiment evaluates into ``eval/<name>/``."""

    name: str
    kind: Literal["target", "retain", "method"]
    model: Path
    plan: RunPlan | None = None  # method rows: the run
    seed: int | None = None  # retain models trained here: their seed


def _model_key(path: Path) -> str:
    info = path / "pretrain.json"
    if info.is_file():
        return str(read_json(info).get("hash"))
    files = sorted(p for p in path.iterdir() if p.is_file())
    return cache_key(
        "model", path=str(path), files=[(p.name, p.stat().st_size, p.stat().st_mtime) for p in files]
    )


def _remove(folder: Path) -> None:
    """Delete ``folder`` whole or not at all: renamed aside first, so a kill mid-way leaves no half."""
    trash = folder.with_name(f".{folder.name}.redo.trash")
    shutil.rmtree(trash, ignore_errors=True)
    folder.replace(trash)
    shutil.rmtree(trash)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}" if not isinstance(exc, UnmemError) else text[0]


class Runner:
    """Executes the stages of one experiment in ``out``."""

    def __init__(self, exp: Experiment, out: ExperimentDir, overwrite: bool, console: Console) -> None:
        self.exp, self.out, self.overwrite, self.console = exp, out, overwrite, console
        self.split = exp.benchmark.split
        self.data_dir = exp.benchmark.data_dir or out.world
        self.target, self.retains = self._model_rows()
        self.keys: dict[str, str] = {}  # stage id (and "model:<row>") -> hash of its inputs
        self.redo: dict[str, str] = {}  # stage id -> what changed, for stages --overwrite redoes
        self.failed: list[str] = []
        self.upgraded: list[str] = []  # stages kept although unmem has settings new since they ran
        self.upgraded_keys: dict[str, str] = {}  # their old key -> today's
        self.log: StageLog  # set by run_experiment once the stages are known

    def _model_rows(self) -> tuple[Row, list[Row]]:
        models = self.exp.models
        if models.target is not None:
            retains = [
                Row("retain" if i == 0 else f"retain-{i + 1}", "retain", p)
                for i, p in enumerate(models.retains)
            ]
            return Row("target", "target", models.target), retains
        from unmem.pretrain import retain_name

        base, seed = retain_name(self.split), models.pretrain.seed
        extra = [s for s in models.retain_seeds or [] if s != seed]
        retains = [Row("retain", "retain", self.out.models / base, seed=seed)]
        retains += [
            Row(f"retain-seed{s}", "retain", self.out.models / f"{base}-seed{s}", seed=s) for s in extra
        ]
        return Row("target", "target", self.out.models / "target"), retains

    @property
    def reference(self) -> Path | None:
        """The retain model forget quality and PrivLeak compare with (the first one)."""
        return self.retains[0].model if self.retains else None

    def method_row(self, plan: RunPlan) -> Row:
        return Row(plan.name, "method", self.out.run(plan.name).model, plan)

    def setup_stages(self) -> list[Stage]:
        """Data, models and the evaluation of every reference row: what any method run needs first."""
        stages = [
            Stage("data", "data", f"{self.exp.benchmark.name} data", self.data),
            Stage("models", "model", "models", self.models),
        ]
        for row in (*self.retains, self.target):
            stages.append(Stage(f"eval:{row.name}", "eval", f"evaluate {row.name}", self._eval_fn(row)))
        return stages

    def stages(self) -> list[Stage]:
        stages = self.setup_stages()
        for plan in self.exp.runs:
            stages.append(
                Stage(f"unlearn:{plan.name}", "unlearn", f"unlearn {plan.name}", self._unlearn_fn(plan))
            )
            row = self.method_row(plan)
            stages.append(Stage(f"eval:{plan.name}", "eval", f"evaluate {plan.name}", self._eval_fn(row)))
        stages.append(Stage("report", "report", "report", self.report))
        return stages

    def _unlearn_fn(self, plan: RunPlan) -> Callable[[], bool]:
        return lambda: self.unlearn(plan)

    def _eval_fn(self, row: Row) -> Callable[[], bool]:
        return lambda: self.evaluate(row)

    def _stale(self, stage_id: str, what: Path) -> None:
        """Refuse to replace an output made from other inputs, unless --overwrite agreed to redo it
        (``changes`` lists these before any work; this guards what it could not know yet)."""
        if stage_id not in self.redo:
            raise UnmemError(
                f"{what} was made from other settings than {self.exp.source or 'this experiment'} now gives; "
                "pass --overwrite to redo it, or choose another --out"
            )

    def _begin(self, stage_id: str, kind: str, inputs: dict[str, Any], output: Path, complete: bool) -> bool:
        """Record what the stage is made from; False when its complete output was made from that.

        An output made from other inputs is deleted first (only for a stage --overwrite redoes),
        so the record always describes what is on disk: ``key`` is what a finished stage was
        made from, ``pending_key`` what a started one is making (a kill -9 after its output
        appeared, before ``key`` was written, leaves the output of ``pending_key``).
        """
        key = cache_key(kind, **inputs)
        self.keys[stage_id] = key
        entry = self.log.record(stage_id)
        made_from = entry.get("key") or entry.get("pending_key")
        if complete and made_from == key:
            return False
        if output.exists() and made_from != key:
            self._stale(stage_id, output)
            _remove(output)
        entry.update({"key": None, "pending_key": key, "inputs": inputs})
        self.log.save()
        return True

    # -- stages ------------------------------------------------------------------------------------

    def data_key(self) -> str:
        """The world's config (generated here), or the content of the data files (given)."""
        from unmem.data.benchmarks import get_benchmark, load_benchmark
        from unmem.data.world import World

        bench = self.exp.benchmark
        if bench.world_config is not None:
            return cache_key("world", config=bench.world_config.model_dump(mode="json"))
        if bench.name == "world":
            return World.load(self.data_dir).content_hash()
        files = get_benchmark(bench.name).unlearn_files(self.data_dir, self.split)
        return cache_key(
            "benchmark-data",
            eval=load_benchmark(bench.name, self.data_dir, self.split).content_hash(),
            unlearn=[hash_files([path]) for path in (files.forget, files.retain) if path],
        )

    def data(self) -> bool:
        """The world (generated here or read), or another layout's files (hashed)."""
        from unmem.data.world import WorldConfig, generate_world

        self.keys["data"] = self.data_key()
        config = self.exp.benchmark.world_config
        if config is None:
            return False
        manifest = self.out.world / "world.json"
        if manifest.is_file():
            if WorldConfig(**read_json(manifest)["config"]) == config:
                return False
            self._stale("data", self.out.world)
        generate_world(config, self.out.world, overwrite=True)
        return True

    def models(self) -> bool:
        """Train target and retain models side by side (unchanged ones are reused), or read yours."""
        worked = False if self.exp.models.given else self._train_world_models()
        for row in (self.target, *self.retains):
            if not row.model.is_dir():
                raise UnmemError(f"{row.model}: model directory missing after training")
            self.keys[f"model:{row.name}"] = _model_key(row.model)
        return worked

    def wanted_models(self) -> list[tuple[Path, str | None, Any]]:
        """(directory, forget split left out, PretrainConfig) of every model trained here."""
        pretrain = self.exp.models.pretrain
        wanted = [(self.target.model, None, pretrain)]
        return wanted + [
            (row.model, self.split, pretrain.model_copy(update={"seed": row.seed})) for row in self.retains
        ]

    def _train_world_models(self) -> bool:
        from unmem.data.world import World
        from unmem.pretrain import is_current, train_world_models

        models = self.exp.models
        world = World.load(self.data_dir)
        stale = [
            path for path, split, config in self.wanted_models() if not is_current(world, path, split, config)
        ]
        if not stale:
            return False
        for path in stale:
            if (path / "pretrain.json").is_file():
                self._stale("models", path)
        # Passed only when asked for: train_world_models gained the keyword with the noise floor.
        extra = {"retain_seeds": models.retain_seeds} if models.retain_seeds is not None else {}
        train_world_models(world, self.out.models, [self.split], models.pretrain, overwrite=True, **extra)
        return True

    def unlearn_inputs(self, plan: RunPlan) -> dict[str, Any]:
        return {
            "config": plan.config.model_dump(mode="json"),
            "target": self.keys["model:target"],
            "data": self.keys["data"],
            "split": self.split,
        }

    def unlearn(self, plan: RunPlan) -> bool:
        from unmem.data.benchmarks import get_benchmark
        from unmem.evaluation.orchestrator import torch_threads
        from unmem.train import unlearn

        stage_id = f"unlearn:{plan.name}"
        run_dir = self.out.run(plan.name)
        started = self.log.record(stage_id).get("pending_key")
        if not self._begin(
            stage_id, "unlearn", self.unlearn_inputs(plan), run_dir.root, run_dir.summary.is_file()
        ):
            return False
        if run_dir.work.exists() and started not in (None, self.keys[stage_id]):
            shutil.rmtree(run_dir.work)  # checkpoints of other settings: start afresh
        files = get_benchmark(self.exp.benchmark.name).unlearn_files(self.data_dir, self.split)
        with torch_threads(self.exp.config.threads):
            unlearn(
                self.target.model, files.forget, run_dir.root, with_holdout(plan.config, files.holdout),
                retain_path=files.retain, overwrite=True, resume=True,
            )  # fmt: skip
        return True

    def eval_inputs(self, row: Row) -> dict[str, Any]:
        """What a row's numbers depend on: its model, the retain model, the data and every
        evaluation setting that changes a number (not threads or batch size)."""
        upstream = f"unlearn:{row.name}" if row.kind == "method" else f"model:{row.name}"
        settings = self.exp.config.eval.model_dump(
            mode="json", exclude={"threads", "batch_size", "trust_remote_code"}
        )
        return {
            "v": EVAL_VERSION,
            "model": self.keys.get(upstream),
            "retain": self.keys.get("model:retain"),
            "data": self.keys.get("data"),
            "split": self.split,
            "eval": settings,
        }

    def evaluate(self, row: Row) -> bool:
        if row.kind == "method" and f"unlearn:{row.name}" in self.failed:
            raise UnmemError(f"not evaluated: unlearning {row.name} failed")
        eval_dir = self.out.eval(row.name)
        # Never skipped here: evaluate() reuses (or resumes) the families it already has.
        self._begin(f"eval:{row.name}", "eval-row", self.eval_inputs(row), eval_dir.root, complete=False)
        evaluate(
            row.model,
            benchmark=self.exp.benchmark.name,
            data=self.data_dir,
            split=self.split,
            out_dir=eval_dir.root,
            retain_model=self.reference,
            retain_cache_dir=self.out.retain_cache,
            config=self.exp.config.eval,
        )
        summary = EvalSummary.read(eval_dir.summary)
        if summary.cached and all(summary.cached.values()):
            return False
        try:
            self._track(row, summary)
        except Exception as exc:  # a tracker that cannot log (server down) must not lose the results
            self.console.print(
                f"[yellow]tracking skipped[/] for {row.name}: {_one_line(exc)}", highlight=False
            )
        return True

    # -- what changed since the last run -----------------------------------------------------------

    def plan_redo(self) -> None:
        """What changed since the last run here: an error without --overwrite, else redone, and said."""
        changes = self.changes()
        if self.upgraded:
            self.console.print(
                f"kept {', '.join(self.upgraded)}: made before settings new to unmem, which are at their "
                "defaults (as they ran)", highlight=False, soft_wrap=True,
            )  # fmt: skip
        if changes and not self.overwrite:
            raise changed_error(self.out.root, self.exp.source, changes)
        if changes:
            listed = ", ".join(f"{stage} ({why})" for stage, why in changes.items())
            self.console.print(f"[yellow]redoing[/] what changed: {listed}", highlight=False, soft_wrap=True)
        self.redo = changes

    def changes(self) -> dict[str, str]:
        """Stages whose output on disk was made from other inputs than the file now gives, and what
        changed, found before any work (keys that need a model not trained yet are left to ``_begin``)."""
        changed: dict[str, str] = {}
        if (why := self._world_change()) is not None:
            changed["data"] = why
        if (why := self._models_change("data" in changed)) is not None:
            changed["models"] = why
        outputs = {f"unlearn:{plan.name}": self.out.run(plan.name).root for plan in self.exp.runs}
        outputs |= {f"eval:{row.name}": self.out.eval(row.name).root for row in self.eval_rows()}
        if changed:  # what is made from the data or the models is redone with them
            cause = next(iter(changed))
            return changed | {sid: f"after {cause}" for sid, path in outputs.items() if path.exists()}
        self.keys["data"] = self.data_key()
        for row in (self.target, *self.retains):
            if row.model.is_dir():
                self.keys[f"model:{row.name}"] = _model_key(row.model)
        for row in self.eval_rows():
            if row.plan is not None and "model:target" in self.keys:
                self._compare(
                    f"unlearn:{row.name}", "unlearn", self.unlearn_inputs(row.plan), outputs, changed,
                    settings={"config": row.plan.config},
                )  # fmt: skip
            upstream = f"unlearn:{row.name}" if row.plan is not None else f"model:{row.name}"
            if upstream in changed:
                if outputs[f"eval:{row.name}"].exists():
                    changed[f"eval:{row.name}"] = f"after {upstream}"
            elif upstream in self.keys:
                self._compare(
                    f"eval:{row.name}", "eval-row", self.eval_inputs(row), outputs, changed,
                    settings={"eval": self.exp.config.eval},
                )  # fmt: skip
        return changed

    def eval_rows(self) -> list[Row]:
        return [*self.retains, self.target, *(self.method_row(plan) for plan in self.exp.runs)]

    def _compare(
        self,
        stage_id: str,
        kind: str,
        inputs: dict[str, Any],
        outputs: dict[str, Path],
        changed: dict[str, str],
        settings: dict[str, BaseModel] | None = None,
    ) -> None:
        self.keys[stage_id] = key = cache_key(kind, **inputs)
        entry = self.log.state["stages"].get(stage_id, {})
        if not outputs[stage_id].exists() or (entry.get("key") or entry.get("pending_key")) == key:
            return
        if settings is None or not self._keep_upgraded(stage_id, entry, inputs, settings):
            changed[stage_id] = describe_change(entry.get("inputs"), inputs)

    def _keep_upgraded(
        self, stage_id: str, entry: dict[str, Any], inputs: dict[str, Any], settings: dict[str, BaseModel]
    ) -> bool:
        """A finished stage whose recorded inputs lack only settings new to unmem, at their defaults,
        was made as today's inputs would make it: its record is brought up to date and it is kept
        (stages made from it follow, through ``upgraded_keys``). Upgrading unmem redoes nothing."""
        old, old_key = entry.get("inputs"), entry.get("key")
        if old_key is None or not isinstance(old, dict):
            return False
        old = {name: self.upgraded_keys.get(v, v) if isinstance(v, str) else v for name, v in old.items()}
        if not only_new_defaults(old, inputs, settings):
            return False
        self.upgraded_keys[old_key] = self.keys[stage_id]
        entry.update({"key": self.keys[stage_id], "inputs": inputs})
        self.upgraded.append(stage_id)
        return True

    def _world_change(self) -> str | None:
        from unmem.data.world import WorldConfig

        config = self.exp.benchmark.world_config
        manifest = self.out.world / "world.json"
        if config is None or not manifest.is_file():
            return None
        old = WorldConfig(**read_json(manifest)["config"]).model_dump(mode="json")
        return first_difference(old, config.model_dump(mode="json"), "world")

    def _models_change(self, data_changed: bool) -> str | None:
        from unmem.data.world import World
        from unmem.pretrain import is_current

        if self.exp.models.given:
            return None
        trained = [(p, split, c) for p, split, c in self.wanted_models() if (p / "pretrain.json").is_file()]
        if trained and data_changed:
            return "after data"
        for path, split, config in trained:
            if not is_current(World.load(self.data_dir), path, split, config):
                old = read_json(path / "pretrain.json").get("config") or {}
                difference = first_difference(old, config.model_dump(mode="json"), "models")
                return f"{path.name}: {difference or 'the world changed'}"
        return None

    def _track(self, row: Row, summary: EvalSummary) -> None:
        trackers = make_trackers(self.exp.tracking, self.exp.config.name, row.name, self.out.tracking)
        if not trackers:
            return
        run_summary = self.out.run(row.name).summary
        run = RunSummary.read(run_summary) if row.kind == "method" and run_summary.is_file() else None
        track_row(trackers, row.name, self.split, summary, run, row.plan)

    def report(self) -> bool:
        from unmem.report import build_report

        rows = self.report_rows()
        data = ReportData(
            name=self.exp.config.name,
            split=self.split,
            benchmark=self.exp.benchmark.name,
            data=str(self.data_dir),
            world=str(self.data_dir) if self.exp.benchmark.name == "world" else None,
            target=str(self.target.model),
            retain=[str(row.model) for row in self.retains],
            seeds=self.exp.config.seeds,
            rows=rows,
            noise_floor=self.noise_floor(),
            not_computed=self.not_computed(rows),
        )
        data.write(self.out.report_data)
        build_report([self.out.root], self.out.report, console=self.console)
        return True

    # -- report data -------------------------------------------------------------------------------

    def _status(self, stage_id: str) -> str:
        return "failed" if stage_id in self.failed else "done"

    def _error(self, stage_id: str) -> str | None:
        return self.log.record(stage_id).get("error")

    def report_rows(self) -> list[ReportRow]:
        """Target, the reference retain model, then every method run (extra retain models only
        feed the noise floor)."""
        rows = []
        for row in (self.target, *self.retains[:1]):
            pretrain = row.model / "pretrain.json"
            rows.append(
                ReportRow(
                    id=row.name, kind=row.kind, variant=row.name, model=str(row.model),
                    eval_dir=self.out.relative(self.out.eval(row.name).root),
                    pretrain=str(pretrain) if pretrain.is_file() else None,
                    status=self._status(f"eval:{row.name}"), error=self._error(f"eval:{row.name}"),
                )
            )  # fmt: skip
        for plan in self.exp.runs:
            failed = [s for s in (f"unlearn:{plan.name}", f"eval:{plan.name}") if s in self.failed]
            settings = ("lr", "epochs", "batch_size", "max_steps", "lora", "method_args")
            rows.append(
                ReportRow(
                    id=plan.name, kind="method", variant=plan.variant, method=plan.method, seed=plan.seed,
                    grid=plan.grid, sweep=plan.sweep,
                    config={k: v for k, v in plan.config.model_dump(mode="json").items() if k in settings},
                    model=str(self.out.run(plan.name).model),
                    eval_dir=self.out.relative(self.out.eval(plan.name).root),
                    run_dir=self.out.relative(self.out.run(plan.name).root),
                    status="failed" if failed else self._status(f"eval:{plan.name}"),
                    error=self._error(failed[0]) if failed else None,
                )
            )  # fmt: skip
        return rows

    def noise_floor(self) -> NoiseFloor | None:
        """Forget quality (KS p of forget truth ratios) between every pair of retain models."""
        from unmem.metrics.tofu import forget_quality

        if len(self.retains) < 2:
            return None
        ratios = {
            row.name: per_sample_column(self.out.eval(row.name).per_sample("tofu"), "forget", "truth_ratio")
            for row in self.retains
        }
        pairs = []
        for a, b in combinations(self.retains, 2):
            ra, rb = ratios[a.name], ratios[b.name]
            value = forget_quality(ra, rb).value if ra and rb else None
            pairs.append(RetainPair(a=a.name, b=b.name, forget_quality=value))
        values = [p.forget_quality for p in pairs if p.forget_quality is not None]
        return NoiseFloor(
            models=[row.name for row in self.retains],
            pairs=pairs,
            median=statistics.median(values) if values else None,
            min=min(values) if values else None,
        )

    def not_computed(self, rows: list[ReportRow]) -> dict[str, str]:
        """Why a metric is empty in every row: the experiment's reason, else the evaluation's."""
        summaries = [
            EvalSummary.read(self.out.root / row.eval_dir / "summary.json")
            for row in rows
            if row.eval_dir and (self.out.root / row.eval_dir / "summary.json").is_file()
        ]
        reasons: dict[str, str] = {}
        for summary in summaries:
            for metric, why in summary.reasons.items():
                if all(s.metrics.get(metric) is None for s in summaries):
                    reasons.setdefault(metric, why)
        if not self.retains:  # the experiment's reason says what to change in the file
            empty = [m for m in RETAIN_METRICS if all(s.metrics.get(m) is None for s in summaries)]
            reasons |= dict.fromkeys(empty, NO_RETAIN)
        return reasons


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UnmemError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not ExperimentDir(out).state.is_file():
        raise UnmemError(f"--out {out}: not empty and not an experiment directory (no state.json)")


FATAL_KINDS = ("data", "model", "report")


def run_experiment(
    experiment: Experiment | str | Path,
    out_dir: str | Path | None = None,
    *,
    overwrite: bool = False,
    console: Console | None = None,
) -> Path:
    """Run (or resume) an experiment; returns the report directory.

    A method run that fails (diverging loss, out of memory) is recorded and the others go
    on; the report marks it, and an UnmemError naming the failures is raised at the end.
    """
    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    console = console or Console(stderr=True)
    out = check_not_an_input(out_dir or Path("runs") / exp.config.name, experiment_inputs(exp))
    _check_out(out)
    layout = ExperimentDir(out)
    with exclusive_lock(out):
        runner = _runner_class(exp)(exp, layout, overwrite, console)
        stages = runner.stages()
        runner.log = StageLog(layout.state, stages, console)
        runner.plan_redo()
        out.mkdir(parents=True, exist_ok=True)
        runner.log.state["experiment"] = exp.config.name
        runner.log.save()
        write_text_atomic(layout.experiment_file, exp.text)
        run_stages(runner, stages)
    if runner.failed:
        raise UnmemError(
            f"{len(runner.failed)} stage(s) failed ({', '.join(runner.failed)}); the report marks them, "
            f"errors are in {layout.state}; fix and re-run the same command to retry them"
        )
    return layout.report


def _runner_class(exp: Experiment) -> type[Runner]:
    """The stages of an experiment with ``requests:`` are those of ``unmem.experiment.requests``."""
    if exp.config.requests is None:
        return Runner
    from unmem.experiment.requests import SequenceRunner

    return SequenceRunner


def run_stages(runner: Runner, stages: list[Stage]) -> None:
    """Every stage in order; a failed method run or its evaluation is recorded and the rest go on."""
    fatal = {f"eval:{row.name}" for row in (runner.target, *runner.retains)}
    for stage in stages:
        runner.log.show(stage)
        entry = runner.log.record(stage.id)
        entry["status"] = "running"
        runner.log.save()
        start = time.perf_counter()
        try:
            worked = stage.run()
        except (KeyboardInterrupt, SystemExit):
            entry["status"] = "interrupted"
            runner.log.save()
            raise
        except Exception as exc:
            if stage.kind in FATAL_KINDS or stage.id in fatal:
                entry.update({"status": "failed", "error": _one_line(exc)})
                runner.log.save()
                raise
            runner.failed.append(stage.id)
            runner.console.print(f"[bold red]failed[/] {stage.label}: {_one_line(exc)}", highlight=False)
            runner.log.finish(stage, "failed", time.perf_counter() - start, True, _one_line(exc))
            continue
        if stage.id in runner.keys:
            entry["key"] = runner.keys[stage.id]
        entry.pop("pending_key", None)
        runner.log.finish(stage, "done", time.perf_counter() - start, bool(worked))
