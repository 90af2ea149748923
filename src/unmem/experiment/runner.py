"""Run an experiment's stages in its directory: data, models, evaluations, unlearning runs, report.

Every stage computes a key from its inputs (``unmem.io.cache_key``) and is skipped when its
output exists and was made from that key; unlearning resumes from its checkpoints. An
output made from other inputs (an edited file) is an error unless ``--overwrite`` is given,
which redoes just those stages. A method run that fails is recorded and the others go on.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Literal

from rich.console import Console

from unmem.errors import UnmemError
from unmem.evaluation import EVAL_VERSION, evaluate
from unmem.evaluation.reference import per_sample_column
from unmem.experiment.loader import Experiment, load_experiment
from unmem.experiment.plan import RunPlan
from unmem.experiment.stages import Stage, StageLog
from unmem.experiment.tracking import make_trackers, track_row
from unmem.io import cache_key, hash_files, read_json, write_text_atomic
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
        self.keys: dict[str, str] = {}  # stage id -> hash of its inputs
        self.failed: list[str] = []
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

    def stages(self) -> list[Stage]:
        stages = [
            Stage("data", "data", f"{self.exp.benchmark.name} data", self.data),
            Stage("models", "model", "models", self.models),
        ]
        for row in (*self.retains, self.target):
            stages.append(Stage(f"eval:{row.name}", "eval", f"evaluate {row.name}", self._eval_fn(row)))
        for plan in self.exp.runs:
            row = Row(plan.name, "method", self.out.run(plan.name).model, plan)
            stages.append(
                Stage(f"unlearn:{plan.name}", "unlearn", f"unlearn {plan.name}", self._unlearn_fn(plan))
            )
            stages.append(Stage(f"eval:{plan.name}", "eval", f"evaluate {plan.name}", self._eval_fn(row)))
        stages.append(Stage("report", "report", "report", self.report))
        return stages

    def _unlearn_fn(self, plan: RunPlan) -> Callable[[], bool]:
        return lambda: self.unlearn(plan)

    def _eval_fn(self, row: Row) -> Callable[[], bool]:
        return lambda: self.evaluate(row)

    def _stale(self, what: Path) -> None:
        if not self.overwrite:
            raise UnmemError(
                f"{what} was made from other settings than {self.exp.source or 'this experiment'} now gives; "
                "pass --overwrite to redo it, or choose another --out"
            )

    def _cached(self, stage_id: str, key: str, output_complete: bool, output: Path) -> bool:
        """True if the stage can be skipped; raises on a stale output without --overwrite."""
        self.keys[stage_id] = key
        if not output_complete:
            return False
        recorded = self.log.record(stage_id).get("key")
        if recorded is None or recorded == key:
            return True
        self._stale(output)
        return False

    # -- stages ------------------------------------------------------------------------------------

    def data(self) -> bool:
        """The world (generated here or read), or another layout's files (hashed)."""
        from unmem.data.benchmarks import get_benchmark, load_benchmark
        from unmem.data.world import World, WorldConfig, generate_world

        bench = self.exp.benchmark
        if bench.world_config is None:
            if bench.name == "world":
                self.keys["data"] = World.load(self.data_dir).content_hash()
            else:
                files = get_benchmark(bench.name).unlearn_files(self.data_dir, self.split)
                self.keys["data"] = cache_key(
                    "benchmark-data",
                    eval=load_benchmark(bench.name, self.data_dir, self.split).content_hash(),
                    unlearn=[hash_files([path]) for path in (files.forget, files.retain) if path],
                )
            return False
        self.keys["data"] = cache_key("world", config=bench.world_config.model_dump(mode="json"))
        manifest = self.out.world / "world.json"
        if manifest.is_file():
            if WorldConfig(**read_json(manifest)["config"]) == bench.world_config:
                return False
            self._stale(self.out.world)
        generate_world(bench.world_config, self.out.world, overwrite=True)
        return True

    def models(self) -> bool:
        """Train target and retain models side by side (unchanged ones are reused), or read yours."""
        worked = False if self.exp.models.given else self._train_world_models()
        for row in (self.target, *self.retains):
            if not row.model.is_dir():
                raise UnmemError(f"{row.model}: model directory missing after training")
            self.keys[f"model:{row.name}"] = _model_key(row.model)
        return worked

    def _train_world_models(self) -> bool:
        from unmem.data.world import World
        from unmem.pretrain import is_current, train_world_models

        models = self.exp.models
        world = World.load(self.data_dir)
        wanted = [(self.target.model, None, models.pretrain)]
        wanted += [
            (row.model, self.split, models.pretrain.model_copy(update={"seed": row.seed}))
            for row in self.retains
        ]
        if all(is_current(world, path, split, config) for path, split, config in wanted):
            return False
        # Passed only when asked for: train_world_models gained the keyword with the noise floor.
        extra = {"retain_seeds": models.retain_seeds} if models.retain_seeds is not None else {}
        train_world_models(world, self.out.models, [self.split], models.pretrain, **extra)
        return True

    def unlearn(self, plan: RunPlan) -> bool:
        from unmem.data.benchmarks import get_benchmark
        from unmem.train import unlearn

        stage_id = f"unlearn:{plan.name}"
        run_dir = self.out.run(plan.name)
        key = cache_key(
            "unlearn",
            config=plan.config.model_dump(mode="json"),
            target=self.keys["model:target"],
            data=self.keys["data"],
            split=self.split,
        )
        if self._cached(stage_id, key, run_dir.summary.is_file(), run_dir.root):
            return False
        entry = self.log.record(stage_id)
        if run_dir.work.exists() and entry.get("pending_key") not in (None, key):
            shutil.rmtree(run_dir.work)  # checkpoints of other settings: start afresh
        entry["pending_key"] = key
        self.log.save()
        files = get_benchmark(self.exp.benchmark.name).unlearn_files(self.data_dir, self.split)
        unlearn(
            self.target.model, files.forget, run_dir.root, plan.config,
            retain_path=files.retain, overwrite=True, resume=True,
        )  # fmt: skip
        return True

    def evaluate(self, row: Row) -> bool:
        if row.kind == "method" and f"unlearn:{row.name}" in self.failed:
            raise UnmemError(f"not evaluated: unlearning {row.name} failed")
        spec = self.exp.config.eval
        upstream = f"unlearn:{row.name}" if row.kind == "method" else f"model:{row.name}"
        key = cache_key(
            "eval-row",
            v=EVAL_VERSION,  # a new version recomputes; --overwrite then replaces refused results
            model=self.keys.get(upstream),
            retain=self.keys.get("model:retain"),
            data=self.keys.get("data"),
            settings=[spec.max_samples, spec.device],  # what makes evaluate() refuse old results
        )
        self.keys[f"eval:{row.name}"] = key
        recorded = self.log.record(f"eval:{row.name}").get("key")
        # evaluate() caches per metric family and refuses results of another model unless
        # overwrite: pass overwrite only for an output made from other inputs, with --overwrite.
        evaluate(
            row.model,
            benchmark=self.exp.benchmark.name,
            data=self.data_dir,
            split=self.split,
            out_dir=self.out.eval(row.name).root,
            retain_model=self.reference,
            config=spec,
            overwrite=self.overwrite and recorded not in (None, key),
        )
        summary = EvalSummary.read(self.out.eval(row.name).summary)
        if summary.cached and all(summary.cached.values()):
            return False
        try:
            self._track(row, summary)
        except Exception as exc:  # a tracker that cannot log (server down) must not lose the results
            self.console.print(
                f"[yellow]tracking skipped[/] for {row.name}: {_one_line(exc)}", highlight=False
            )
        return True

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
                    grid=plan.grid,
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
    out = Path(out_dir or Path("runs") / exp.config.name).resolve()
    _check_out(out)
    layout = ExperimentDir(out)
    runner = Runner(exp, layout, overwrite, console)
    stages = runner.stages()
    out.mkdir(parents=True, exist_ok=True)
    runner.log = StageLog(layout.state, stages, console)
    runner.log.state["experiment"] = exp.config.name
    runner.log.save()
    write_text_atomic(layout.experiment_file, exp.text)
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
            console.print(f"[bold red]failed[/] {stage.label}: {_one_line(exc)}", highlight=False)
            runner.log.finish(stage, "failed", time.perf_counter() - start, True, _one_line(exc))
            continue
        if stage.id in runner.keys:
            entry["key"] = runner.keys[stage.id]
        entry.pop("pending_key", None)
        runner.log.finish(stage, "done", time.perf_counter() - start, bool(worked))
    if runner.failed:
        raise UnmemError(
            f"{len(runner.failed)} stage(s) failed ({', '.join(runner.failed)}); the report marks them, "
            f"errors are in {layout.state}; fix and re-run the same command to retry them"
        )
    return layout.report
