"""The import graph, read from the source with ``ast``: lower layers never import higher ones.

data and metrics sit below methods (issue 13: they used to import ``methods.base`` for
IGNORE_INDEX and token log-probs); evaluation never imports a method (it used to for
sentence embeddings); nothing below the experiment runner imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "unmem"

# package (or module) -> unmem packages/modules it must not import, directly or inside a function.
FORBIDDEN = {
    "data": ("methods", "metrics", "evaluation", "experiment", "train", "pretrain", "report", "cli"),
    "metrics": ("methods", "evaluation", "experiment", "train", "pretrain", "report", "cli"),
    "methods": ("metrics", "evaluation", "experiment", "train", "pretrain", "report", "cli"),
    "evaluation": ("methods", "experiment", "train", "pretrain", "report", "cli"),
    "logprobs": ("data", "metrics", "methods", "evaluation", "experiment"),
    "embeddings": ("data", "metrics", "methods", "evaluation", "experiment"),
    "results": ("evaluation", "experiment", "methods", "report"),
    "layout": ("evaluation", "experiment", "methods", "report"),
    "store": ("report", "cli"),
}
# The one arrow across: the robustness audit's relearning attacks fine-tune a copy of the model the
# way `unmem finetune` does (train.finetune), imported inside the function that needs it.
ALLOWED = {"evaluation/attacks/relearn.py": {"train"}}


def unmem_imports(path: Path) -> set[str]:
    """Top-level unmem subpackages/modules a file imports (``from unmem import methods`` included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "unmem" and len(parts) > 1:
                found.add(parts[1])
    return found


def files_of(layer: str) -> list[Path]:
    package = SRC / layer
    return sorted(package.rglob("*.py")) if package.is_dir() else [SRC / f"{layer}.py"]


def test_the_parser_sees_every_import_form(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "import unmem.methods.base\nfrom unmem.metrics import scoring\nfrom unmem import train\n"
        "def f():\n    from unmem.evaluation.session import ModelSession\nfrom . import x\nimport torch\n"
    )
    assert unmem_imports(source) == {"methods", "metrics", "train", "evaluation"}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_import_arrow_into_a_higher_layer(layer):
    arrows = [
        f"{path.relative_to(SRC)} imports unmem.{target}"
        for path in files_of(layer)
        for target in sorted(
            unmem_imports(path) & set(FORBIDDEN[layer]) - ALLOWED.get(str(path.relative_to(SRC)), set())
        )
    ]
    assert not arrows, arrows


def test_the_allowed_arrow_is_to_fine_tuning_only():
    """evaluation -> train goes through train.finetune's in-memory fine-tune only."""
    relearn = SRC / "evaluation" / "attacks" / "relearn.py"
    modules = {
        node.module
        for node in ast.walk(ast.parse(relearn.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("unmem.train")
    }
    assert modules == {"unmem.train.finetune"}
