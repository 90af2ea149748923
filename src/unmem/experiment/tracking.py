"""Log each row's final metrics to accelerate's trackers (TensorBoard, MLflow, W&B) when installed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unmem.experiment.plan import RunPlan
from unmem.results import EvalSummary, RunSummary


def make_trackers(names: list[str], project: str, run_name: str, logging_dir: Path) -> list[Any]:
    """accelerate trackers for ``names`` whose package is installed; the others are skipped."""
    from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

    trackers: list[Any] = []
    for name in names:
        if name == "tensorboard" and is_tensorboard_available():
            from accelerate.tracking import TensorBoardTracker

            trackers.append(TensorBoardTracker(run_name, logging_dir))
        elif name == "mlflow" and is_mlflow_available():
            from accelerate.tracking import MLflowTracker

            trackers.append(MLflowTracker(experiment_name=project, run_name=run_name))
        elif name == "wandb" and is_wandb_available():
            from accelerate.tracking import WandBTracker

            trackers.append(WandBTracker(project, name=run_name))
    for tracker in trackers:
        if hasattr(tracker, "start"):  # accelerate >= 1.2 starts trackers lazily
            tracker.start()
    return trackers


def track_row(
    trackers: list[Any],
    row: str,
    split: str,
    summary: EvalSummary,
    run: RunSummary | None,
    plan: RunPlan | None,
) -> None:
    """One row's metrics (and training cost) with its settings as hyper-parameters."""
    values: dict[str, Any] = {k: v for k, v in summary.metrics.items() if isinstance(v, int | float)}
    if run is not None:
        values |= {
            k: getattr(run, k)
            for k in ("train_seconds", "peak_memory_mb")
            if isinstance(getattr(run, k), int | float)
        }
    hparams: dict[str, Any] = {"row": row, "split": split}
    if plan is not None:
        flat = plan.config.model_dump(mode="json")
        flat |= {f"method_args.{k}": v for k, v in flat.pop("method_args").items()}
        hparams |= {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in flat.items()}
    for tracker in trackers:
        tracker.store_init_configuration(hparams)
        tracker.log(values, step=0)
        tracker.finish()
