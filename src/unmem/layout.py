"""Where things live on disk: every directory layout unmem writes, in one place.

- ``EvalDir``: an ``unmem eval --out`` directory (docs/data-format.md, "Evaluation output").
- ``RunDir``: an ``unmem unlearn --out`` directory.
- ``ExperimentDir``: an ``unmem run --out`` directory (``unmem.experiment``).
"""

from __future__ import annotations

from pathlib import Path


class EvalDir:
    """``summary.json``, ``per_sample/<family>.jsonl`` and ``retain_cache/``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def per_sample_dir(self) -> Path:
        return self.root / "per_sample"

    def per_sample(self, family: str) -> Path:
        return self.per_sample_dir / f"{family}.jsonl"

    @property
    def retain_cache(self) -> Path:
        """Default retain-reference cache: inside the output (``--retain-cache DIR`` shares one)."""
        return self.root / "retain_cache"


class RunDir:
    """An unlearning run: ``model/``, ``summary.json``, ``train_log.jsonl``, ``run_config.json``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def train_log(self) -> Path:
        return self.root / "train_log.jsonl"

    @property
    def work(self) -> Path:
        """Checkpoints of an unfinished run (``unmem.train`` resumes from them)."""
        return self.root.with_name(self.root.name + ".work")


class ExperimentDir:
    """``world/``, ``models/<name>/``, ``runs/<run>/``, ``eval/<row>/``, ``report/``, ``state.json``,
    ``report_data.json``, ``experiment.yaml`` and ``tracking/``; with ``requests:`` also
    ``stores/<run>/``, ``requests/`` and ``sequence.json``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def world(self) -> Path:
        return self.root / "world"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def run(self, name: str) -> RunDir:
        return RunDir(self.root / "runs" / name)

    def eval(self, name: str) -> EvalDir:
        return EvalDir(self.root / "eval" / name)

    @property
    def retain_cache(self) -> Path:
        return self.root / "eval" / ".retain_cache"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def report_data(self) -> Path:
        return self.root / "report_data.json"

    @property
    def experiment_file(self) -> Path:
        return self.root / "experiment.yaml"

    @property
    def tracking(self) -> Path:
        return self.root / "tracking"

    def store(self, name: str) -> Path:
        """A run's model store, in an experiment with ``requests:``."""
        return self.root / "stores" / name

    @property
    def requests(self) -> Path:
        """The requests' data files (the union of the first k, for runs that retrain on it)."""
        return self.root / "requests"

    @property
    def sequence_data(self) -> Path:
        return self.root / "sequence.json"

    def relative(self, path: Path) -> str:
        """A path inside the experiment as report_data.json records it (relative: the folder moves)."""
        return path.relative_to(self.root).as_posix()
