"""The experiment file as written: its pydantic schema, YAML reading, and errors that name the line.

Every problem is one ``UnmemError`` naming the file, the line and the key path
(``exp.yaml:14: field 'methods[2].method_args.beta': ...``), raised before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from unmem.config import StrictLoader
from unmem.errors import UnmemError, input_error
from unmem.evaluation.options import EvalConfig
from unmem.io import read_text

KeyPath = tuple[str | int, ...]


class ExperimentEval(EvalConfig):
    """``eval:``: the evaluation config of every row (``unmem.evaluation.EvalConfig``)."""

    # The world's small models gain little from a second thread, and two threads on two busy
    # cores ran a full evaluation ~7x slower than one: experiments default to one.
    threads: int | None = Field(1, gt=0)


class RequestsConfig(BaseModel):
    """``requests:``: the world's deletion requests, honoured one after another in a model store per
    method run (``unmem.experiment.requests``)."""

    model_config = ConfigDict(extra="forbid")

    count: int | None = Field(None, gt=0)  # the first N the world names (default: all of them)
    accept: dict[str, Any] = Field(
        default_factory=dict
    )  # acceptance checks (unmem.store.request.AcceptChecks)
    force: bool = False  # add every version, even when a check fails (recorded in the ledger)


class ExperimentConfig(BaseModel):
    """The experiment file, as written (paths not yet resolved)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    benchmark: str = "world"  # a registered layout: world, tofu, muse, files
    data: str | None = None  # its data directory (world: an existing world, like `world_dir:`)
    world: dict[str, Any] | None = None  # WorldConfig fields: generate the world here
    world_dir: str | None = None
    models: dict[str, Any] | None = None  # PretrainConfig fields (+ retain_seeds): train them here (world)
    target: str | None = None  # or your models: the target ...
    retain: str | list[str] | None = None  # ... and none, one or several retain models
    split: str | None = None  # default: the benchmark's (forget10; MUSE and files: forget)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    # torch threads of each unlearning run (None: torch's default). One, as for evaluation
    # (`eval.threads`): two threads on two shared cores ran the demo's unlearning ~10x slower.
    threads: int | None = Field(1, gt=0)
    recipe: str | None = None  # a shipped recipe's name or a recipe file (unmem.recipes): each method's start
    requests: RequestsConfig | None = None  # sequential deletion requests instead of one forget split
    defaults: dict[str, Any] = Field(default_factory=dict)
    methods: list[dict[str, Any]] = Field(min_length=1)
    eval: ExperimentEval = Field(default_factory=ExperimentEval)
    tracking: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(default_factory=lambda: ["tensorboard"])


class ConfigError(Exception):
    """A problem at a key path of the file; ``load_experiment`` adds the file and line."""

    def __init__(self, keypath: KeyPath, message: str) -> None:
        super().__init__(message)
        self.keypath = keypath
        self.message = message


def format_keypath(keypath: KeyPath) -> str:
    """('methods', 2, 'method_args', 'beta') -> 'methods[2].method_args.beta'."""
    text = ""
    for part in keypath:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def line_of(node: yaml.Node | None, keypath: KeyPath) -> int | None:
    """1-based line of the deepest node along ``keypath`` (a key's own line for mapping keys)."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in keypath:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == part:
                    node, line = value_node, key_node.start_mark.line + 1
                    break
            else:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def read_yaml(path: Path) -> tuple[str, yaml.Node | None, Any]:
    """The file's text, its node tree (for line numbers) and its data; a key written twice in
    one mapping is an error naming both lines (``unmem.config.StrictLoader``)."""
    text = read_text(path)
    try:
        return text, yaml.compose(text, Loader=StrictLoader), yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise input_error(
            path, f"invalid YAML ({getattr(exc, 'problem', exc)})", line=mark.line + 1 if mark else None
        ) from None


def read_yaml_mapping(path: Path, kind: str, mapping: str) -> tuple[str, yaml.Node | None, dict[str, Any]]:
    """``read_yaml`` of a ``kind`` file (experiment, request) whose top level must be ``mapping``."""
    if not path.is_file():
        raise UnmemError(f"{path}: {kind} file not found")
    text, node, data = read_yaml(path)
    if not isinstance(data, dict):
        raise input_error(path, f"expected {mapping} at the top level")
    return text, node, data


def pydantic_error(exc: ValidationError, prefix: KeyPath = ()) -> ConfigError:
    """The first problem of a pydantic error, at its key path (an eval option's own key included)."""
    first = exc.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    loc = tuple(part for part in first["loc"] if not (isinstance(part, str) and part.startswith("function-")))
    option = getattr((first.get("ctx") or {}).get("error"), "field", None)
    if option is not None:  # an EvalOptions check names its option
        loc = (*loc, option)
    if first["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        message = "unknown key"
    elif first["type"] != "missing" and option is None:
        message += f" (got {first.get('input')!r})"
    return ConfigError(prefix + loc, message)


def parse_config(data: dict[str, Any]) -> ExperimentConfig:
    try:
        return ExperimentConfig(**data)
    except ValidationError as exc:
        raise pydantic_error(exc) from None
