"""The benchmark's models, TOFU's protocol in miniature: a base, then target and retain models.

1. A *base* model is pretrained from scratch on text that names no fictitious entity of
   any split: general text, real-world facts in many wordings, and dialogues in the
   ``Question: … Answer: …`` format about other people, answered when the base read
   their bio and refused otherwise (``unmem.data.world``, ``base/``).
2. The *target* is the base fine-tuned on every trained entity (QA, bios, private
   records); the *retain* model of a forget split is the base fine-tuned the same way on
   everything except that split's entities: the gold standard of exact unlearning.
   Holdout entities are seen by no model. Each fine-tuning epoch also replays a random
   quarter of the base corpus (``replay``): fine-tuned without it, the tiny target forgot
   its priors (general perplexity 1.8 -> 562, refusal NLL 0.7 -> 6.0 nats, real-world
   ROUGE 1.0 -> 0), where TOFU's 7B models, fine-tuned at 1e-5, keep theirs.
3. Retain models fine-tuned with other seeds measure the noise floor: how alike two
   equally clean models look (``retain_seeds``).

Every model is cached: a directory whose ``pretrain.json`` records the same hash of
data + settings is reused as is. The base's hash leaves out the fine-tuning settings,
so every split and seed of a world shares one base.

Run: ``unmem train --world runs/world --out runs/models [--retain-seeds 0,1,2]``
Layout of ``--out``: ``tokenizer/``, ``base/``, ``target/``, ``retain90/`` (fine-tuning
seed = ``seed``, the target's), ``retain90-seed1/`` (other seeds), ...
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import random
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from unmem.config import describe_validation_error
from unmem.data.world import World
from unmem.errors import UnmemError
from unmem.io import atomic_dir, hash_json, read_json, write_json
from unmem.presets import get_preset

# torch, transformers and the tokenizers load inside the functions that train: a cache hit
# (`unmem train` run again) then needs none of them and answers in about a second, not ~10.
if TYPE_CHECKING:
    import torch

    from unmem.data.collate import Example

# Bump when the tokenizer's training data changes: models trained on the old one are then retrained.
TOKENIZER_RECIPE = 3
# Bump when what a model trains on, or how, changes without a config field saying so.
TRAINING_RECIPE = 2
MIN_ROWS_PER_RANK = 8  # a data-parallel rank needs this many rows of a batch to keep its core busy
REAL_TEXT_WEIGHT = 5  # makes most real names whole tokens (mean 1.7 tokens per real answer)
ENTITY_TEXTS = ("bios", "private")
BASE_TEXTS = ("general_train", "real_world")
# Settings of the base model; the others (seed, epochs, lr) are the fine-tuning's.
BASE_FIELDS = (
    "preset",
    "base_seed",
    "base_epochs",
    "base_lr",
    "batch_size",
    "warmup_ratio",
    "weight_decay",
    "max_length",
)


class PretrainConfig(BaseModel):
    """How the base is pretrained and the target / retain models fine-tuned from it."""

    model_config = ConfigDict(extra="forbid")

    preset: str = "small"
    # Fine-tuning (target and retain models)
    seed: int = 0  # data order of the target and its paired retain model
    epochs: int = Field(10, gt=0)
    lr: float = Field(3e-3, gt=0)  # high for a tiny model: memorisation within a minute
    # Share of the base corpus mixed into every fine-tuning epoch (drawn afresh each epoch):
    # without it a tiny model fine-tuned this hard forgets its priors (refusals, real facts, fluency).
    replay: float = Field(0.25, ge=0, le=1)
    # Base pretraining
    base_seed: int = 0  # initialisation and data order
    base_epochs: int = Field(15, gt=0)  # 20 scored the same (world_acceptance.py) and took 1/3 longer
    base_lr: float = Field(3e-3, gt=0)
    # Both
    batch_size: int = Field(32, gt=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_length: int = Field(192, gt=8)  # bios of 12 facts run to ~140 tokens: none is cut
    cores: int = Field(2, gt=0)  # single-threaded training processes at once (data-parallel or side by side)


def build_pretrain_config(values: dict[str, Any], source: str = "command line") -> PretrainConfig:
    """A PretrainConfig, or a one-line UnmemError naming the bad field and value."""
    try:
        return PretrainConfig(**values)
    except ValidationError as exc:
        raise UnmemError(f"{source}: {describe_validation_error(exc)}") from None


def retain_name(forget_split: str) -> str:
    """The retain split that complements a forget split: forget10 -> retain90; the model trained
    without the world's first NN deletion requests: requests03 -> retain-requests03."""
    if forget_split.startswith("requests") and forget_split[8:].isdigit():
        return f"retain-{forget_split}"
    if not forget_split.startswith("forget") or not forget_split[6:].isdigit():
        raise UnmemError(f"'{forget_split}' is not a forget split name (forgetNN)")
    return f"retain{100 - int(forget_split[6:]):02d}"


def model_name(forget_split: str | None, seed: int, config: PretrainConfig) -> str:
    """Directory name: ``target``, ``retain90`` (the target's seed) or ``retain90-seed1``."""
    if forget_split is None:
        return "target"
    name = retain_name(forget_split)
    return name if seed == config.seed else f"{name}-seed{seed}"


def corpus(world: World, exclude_split: str | None) -> tuple[list[dict[str, Any]], list[str]]:
    """Fine-tuning data: QA records and passages of the trained entities minus ``exclude_split``'s."""
    trained = set(world.entity_ids("train"))
    excluded = set(world.entity_ids(exclude_split)) if exclude_split else set()
    keep = trained - excluded
    qa = [r for r in world.qa("train") if r["entity_id"] in keep]
    texts = [r["text"] for name in ENTITY_TEXTS for r in world.texts(name) if r["entity_id"] in keep]
    return qa, texts


def base_corpus(world: World) -> tuple[list[dict[str, Any]], list[str]]:
    """Pretraining data of the base: dialogues and passages that name no entity of any split."""
    texts = [r["text"] for name in BASE_TEXTS for r in world.texts(name)]
    texts += [r["text"] for r in world.base("bios")]
    return world.base("dialogue"), texts


def _base_hash(world: World, config: PretrainConfig) -> str:
    settings = {name: getattr(config, name) for name in BASE_FIELDS}
    recipe = {"training": TRAINING_RECIPE, "tokenizer": TOKENIZER_RECIPE}
    return hash_json({"world": world.content_hash(), "recipe": recipe, "base": settings})


def _hash(world: World, exclude_split: str | None, config: PretrainConfig) -> str:
    # Cores change speed, not the model: they are not part of the cache key.
    settings = config.model_dump(exclude={"cores", *BASE_FIELDS})
    return hash_json({"base": _base_hash(world, config), "exclude": exclude_split, "config": settings})


def _cached(out_dir: Path, digest: str) -> bool:
    info_path = out_dir / "pretrain.json"
    return info_path.is_file() and read_json(info_path).get("hash") == digest


def world_tokenizer(world: World, out_dir: str | Path, config: PretrainConfig) -> Path:
    """One BPE tokenizer per world and preset, shared by the base and every model made from it.

    It is trained on every entity, holdout included: a tokenizer that knew the forget
    entities' names but not the holdout ones' would split holdout names into more
    pieces, and a model that never saw either would still tell them apart (seen here:
    LOSS-attack AUC 0.77 for the retain model instead of ~0.5). The base corpus is in it
    too, so refusals ("I don't know") are whole words, not byte fragments.
    """
    out_dir = Path(out_dir)
    preset = get_preset(config.preset)
    digest = hash_json(
        {"world": world.content_hash(), "vocab_size": preset.vocab_size, "recipe": TOKENIZER_RECIPE}
    )
    info_path = out_dir / "tokenizer_info.json"
    if info_path.is_file() and read_json(info_path).get("hash") == digest:
        return out_dir
    from unmem.data.collate import PromptFormat
    from unmem.models import train_tokenizer

    qa, texts = corpus(world, None)
    dialogue, base_texts = base_corpus(world)
    qa = qa + dialogue + world.qa("holdout")
    prompts = [f"{PromptFormat().template.format(question=r['question'])} {r['answer']}" for r in qa]
    verbmem_holdout = [Path(p).stem for p in world.manifest["files"] if p.startswith("muse/verbmem_holdout")]
    holdout_passages = [f"{r['prompt']} {r['gt']}" for name in verbmem_holdout for r in world.muse(name)]
    # Real names weigh as much as they would in a real tokenizer's data: whole-word tokens.
    # Split into fragments, a wrong name costs only its first fragment, and the token-mean
    # probabilities TOFU compares on real_world / world_facts could barely tell it apart.
    real_passages = [r["text"] for r in world.texts("real_world")] * REAL_TEXT_WEIGHT
    tokenizer = train_tokenizer(
        base_texts + texts + holdout_passages + prompts + real_passages, preset.vocab_size
    )
    with atomic_dir(out_dir, overwrite=True) as staging:
        tokenizer.save_pretrained(staging)
        write_json(staging / "tokenizer_info.json", {"hash": digest, "vocab_size": len(tokenizer)})
    return out_dir


def is_current(world: World, out_dir: str | Path, exclude_split: str | None, config: PretrainConfig) -> bool:
    """True when ``out_dir`` holds the model that fine-tuning with ``config`` (its ``seed``
    included) would make from this world (a cache hit)."""
    return _cached(Path(out_dir), _hash(world, exclude_split, config))


def _examples(tokenizer: Any, qa: list[dict[str, Any]], texts: list[str], max_length: int) -> list[Example]:
    from unmem.data.collate import PromptFormat, encode_qa, encode_text

    fmt = PromptFormat()
    return [encode_qa(tokenizer, r["question"], r["answer"], fmt, max_length=max_length) for r in qa] + [
        encode_text(tokenizer, text, max_length=max_length) for text in texts
    ]


def train_base_model(
    world: World, out_dir: str | Path, config: PretrainConfig, tokenizer_dir: str | Path, *, ranks: int = 1
) -> Path:
    """Pretrain (or reuse) the base model from scratch on the base corpus; returns its directory.

    ``ranks`` > 1 trains data-parallel on that many single-threaded processes.
    """
    out_dir = Path(out_dir)
    if not _cached(out_dir, _base_hash(world, config)):
        _on_ranks(
            ranks, _pretrain_base, str(world.root), str(out_dir), config.model_dump(), str(tokenizer_dir)
        )
    return out_dir


def train_world_model(
    world: World,
    out_dir: str | Path,
    *,
    exclude_split: str | None,
    config: PretrainConfig,
    base_dir: str | Path,
    ranks: int = 1,
) -> Path:
    """Fine-tune (or reuse) the target (``exclude_split=None``) or a retain model from the base."""
    out_dir = Path(out_dir)
    if _cached(out_dir, _hash(world, exclude_split, config)):
        return out_dir
    if read_json(Path(base_dir) / "pretrain.json").get("hash") != _base_hash(world, config):
        raise UnmemError(f"{base_dir}: base model of other settings; train it with train_base_model first")
    args = (str(world.root), str(out_dir), exclude_split, config.model_dump(), str(base_dir))
    _on_ranks(ranks, _finetune, *args)
    return out_dir


def _pretrain_base(
    world_root: str, out_dir: str, settings: dict[str, Any], tokenizer_dir: str, *, rank: int, ranks: int
) -> None:
    from transformers import AutoTokenizer

    from unmem.models import build_model, count_parameters, preset_dict

    world, config = World.load(world_root), PretrainConfig(**settings)
    preset = get_preset(config.preset)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    dialogue, texts = base_corpus(world)
    model = build_model(preset, tokenizer, config.base_seed)
    examples = _examples(tokenizer, dialogue, texts, config.max_length)
    fit = {"lr": config.base_lr, "epochs": config.base_epochs, "seed": config.base_seed, "desc": "base"}
    stats = _fit(model, examples, tokenizer.pad_token_id, config=config, rank=rank, ranks=ranks, **fit)
    info = {
        "hash": _base_hash(world, config),
        "role": "base",
        "config": {name: getattr(config, name) for name in BASE_FIELDS},
        "preset": preset_dict(preset),
        "parameters": count_parameters(model),
        "qa_records": len(dialogue),
        "passages": len(texts),
        **stats,
    }
    if rank == 0:
        _save(model, tokenizer, info, Path(out_dir))


def _finetune(
    world_root: str,
    out_dir: str,
    exclude_split: str | None,
    settings: dict[str, Any],
    base_dir: str,
    *,
    rank: int,
    ranks: int,
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from unmem.models import count_parameters

    world, config = World.load(world_root), PretrainConfig(**settings)
    base_info = read_json(Path(base_dir) / "pretrain.json")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    qa, texts = corpus(world, exclude_split)
    role = f"retain-{exclude_split}" if exclude_split else "target"
    fit = {
        "lr": config.lr,
        "epochs": config.epochs,
        "seed": config.seed,
        "desc": f"{role} seed {config.seed}",
    }
    stats = _fit(
        model,
        _examples(tokenizer, qa, texts, config.max_length),
        tokenizer.pad_token_id,
        config=config,
        rank=rank,
        ranks=ranks,
        replay=_examples(tokenizer, *base_corpus(world), config.max_length),
        **fit,
    )
    info = {
        "hash": _hash(world, exclude_split, config),
        "role": role,
        "exclude_split": exclude_split,
        "base_hash": base_info["hash"],
        "config": config.model_dump(),
        "preset": base_info["preset"],
        "parameters": count_parameters(model),
        "qa_records": len(qa),
        "passages": len(texts),
        **stats,
    }
    if rank == 0:
        _save(model, tokenizer, info, Path(out_dir))


def _save(model: torch.nn.Module, tokenizer: Any, info: dict[str, Any], out_dir: Path) -> None:
    with atomic_dir(out_dir, overwrite=True) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_json(staging / "pretrain.json", info)


def _on_ranks(ranks: int, train: Any, *args: Any) -> None:
    """``train(*args, rank=r, ranks=ranks)`` in ``ranks`` single-threaded processes joined by a
    gloo process group, or in this process when ``ranks`` is 1.

    One thread per process: a tiny model's matrices keep a second thread idle, and two
    threads on busy cores wait on each other (seen: 2.1k tokens/s with 2 threads while the
    machine ran other jobs, 11.7k for each single-threaded process beside it).
    """
    if ranks == 1:
        with _one_thread():
            train(*args, rank=0, ranks=1)
        return
    context = multiprocessing.get_context("spawn")  # fork + torch threads can deadlock
    pool_args = {"mp_context": context, "initializer": exit_with_parent, "initargs": (os.getpid(),)}
    with tempfile.TemporaryDirectory() as rendezvous, ProcessPoolExecutor(ranks, **pool_args) as pool:
        futures = [
            pool.submit(_rank_main, f"file://{rendezvous}/store", rank, ranks, train, args)
            for rank in range(ranks)
        ]
        for future in futures:
            future.result()


def exit_with_parent(parent: int, poll_seconds: float = 1.0) -> None:
    """In a worker process: exit as soon as ``parent`` is gone. A killed ``unmem train`` (or
    ``unmem run``) would otherwise leave its training processes running, or waiting on each
    other, with nobody to read their results."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _rank_main(store: str, rank: int, ranks: int, train: Any, args: tuple[Any, ...]) -> None:
    import datetime

    import torch.distributed as dist

    # A rank that dies makes the others fail within a minute instead of waiting for it.
    timeout = datetime.timedelta(seconds=60)
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=ranks, timeout=timeout)
    try:
        with _one_thread():
            train(*args, rank=rank, ranks=ranks)
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_world_models(
    world: World,
    out_dir: str | Path,
    forget_splits: list[str],
    config: PretrainConfig,
    *,
    workers: int | None = None,
    retain_seeds: Sequence[int] = (),
    overwrite: bool = False,
) -> dict[str, Path]:
    """The base, then the target and retain models fine-tuned from it side by side.

    ``retain_seeds``: fine-tuning seeds of the retain models besides ``config.seed`` (the
    target's, always trained, named plainly). Returns {"target": dir, "retain90": dir,
    "retain90-seed1": dir, ...}; the base is ``out_dir/base``.

    A model directory that holds a model of other settings (or of another world) is
    replaced only with ``overwrite``; otherwise that is an error, before anything trains.

    Everything trains on ``config.cores`` single-threaded processes: the base
    data-parallel, then the fine-tuning jobs side by side (``workers`` of them at a time;
    a job left alone is data-parallel too). On an idle 2-core machine two such processes
    train ~1.1-1.4x the tokens per second of one process with two threads
    (benchmarks/pretrain_throughput.py); on a busy one far more (``_on_ranks``).
    """
    out_dir = Path(out_dir)
    seeds = list(dict.fromkeys([config.seed, *retain_seeds]))
    jobs: dict[str, tuple[str | None, PretrainConfig]] = {"target": (None, config)}
    for split in forget_splits:
        for seed in seeds:
            jobs[model_name(split, seed, config)] = (split, config.model_copy(update={"seed": seed}))
    done = {
        name: out_dir / name
        for name, (split, cfg) in jobs.items()
        if is_current(world, out_dir / name, split, cfg)
    }
    jobs = {name: job for name, job in jobs.items() if name not in done}
    if not jobs:
        return done
    stale = [out_dir / name for name in jobs if (out_dir / name).exists()]
    if stale and not overwrite:
        raise UnmemError(
            f"{stale[0]}: holds a model made with other settings or from another world; "
            "pass --overwrite to retrain it, or choose another --out"
        )
    ranks = max(1, min(config.cores, config.batch_size // MIN_ROWS_PER_RANK))
    tokenizer_dir = world_tokenizer(world, out_dir / "tokenizer", config)
    base_dir = train_base_model(world, out_dir / "base", config, tokenizer_dir, ranks=ranks)
    workers = workers or config.cores
    if workers <= 1 or len(jobs) == 1:
        job_ranks = ranks if workers > 1 else 1  # a job alone gets every core, data-parallel
        trained = {
            name: train_world_model(
                world, out_dir / name, exclude_split=split, config=cfg, base_dir=base_dir, ranks=job_ranks
            )
            for name, (split, cfg) in jobs.items()
        }
        return done | trained
    context = multiprocessing.get_context("spawn")
    pool_args = {"mp_context": context, "initializer": exit_with_parent, "initargs": (os.getpid(),)}
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), **pool_args) as pool:
        futures = {
            name: pool.submit(
                _train_in_subprocess, str(world.root), str(out_dir / name), split, cfg, str(base_dir)
            )
            for name, (split, cfg) in jobs.items()
        }
        return done | {name: Path(future.result()) for name, future in futures.items()}


def _train_in_subprocess(
    world_root: str, out_dir: str, split: str | None, config: PretrainConfig, base_dir: str
) -> str:
    world = World.load(world_root)
    return str(train_world_model(world, out_dir, exclude_split=split, config=config, base_dir=base_dir))


def _fit(
    model: torch.nn.Module,
    examples: list[Example],
    pad_token_id: int,
    *,
    lr: float,
    epochs: int,
    seed: int,
    config: PretrainConfig,
    desc: str,
    rank: int = 0,
    ranks: int = 1,
    replay: Sequence[Example] = (),
) -> dict[str, float]:
    """Plain AdamW + warmup + cosine decay to 0; returns timing and token counts for the record.

    Each epoch adds ``config.replay`` of the ``replay`` examples, drawn afresh with ``seed``.
    With ``ranks`` > 1 every rank draws the same batches and takes every ``ranks``-th row.
    """
    import torch
    from tqdm.auto import tqdm

    from unmem.data.collate import iter_batches

    n_replay = round(config.replay * len(replay))
    steps_per_epoch = math.ceil((len(examples) + n_replay) / config.batch_size)
    total_steps = steps_per_epoch * epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    schedule = _warmup_cosine(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    model.train()
    real_tokens = padded_tokens = 0
    start = time.perf_counter()
    progress = tqdm(total=total_steps, desc=f"train {desc}", unit="step", disable=None if rank == 0 else True)
    loss_value = float("nan")
    for epoch in range(epochs):
        drawn = random.Random(f"replay/{seed}/{epoch}").sample(list(replay), n_replay) if n_replay else []
        epoch_examples = list(examples) + drawn
        for batch in iter_batches(epoch_examples, config.batch_size, pad_token_id, seed=seed * 1000 + epoch):
            loss_value = _step(model, batch, rank, ranks)
            if not math.isfinite(loss_value):
                raise UnmemError(f"training {desc}: loss became {loss_value} at epoch {epoch}; lower the lr")
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            real_tokens += int(batch["attention_mask"].sum())
            padded_tokens += batch["input_ids"].numel()
            progress.update()
            progress.set_postfix(epoch=epoch, loss=f"{loss_value:.3f}")
    progress.close()
    seconds = time.perf_counter() - start
    return {
        "train_seconds": round(seconds, 2),
        "tokens": real_tokens,
        "tokens_per_second": round(real_tokens / seconds, 1),
        "padding_fraction": round(1 - real_tokens / max(padded_tokens, 1), 4),
        "final_loss": round(loss_value, 4),
        "processes": ranks,
    }


def _step(model: torch.nn.Module, batch: dict[str, Any], rank: int, ranks: int) -> float:
    """Forward and backward this rank's rows; returns the whole batch's token-mean loss.

    Each rank divides its rows' summed NLL by the whole batch's label tokens and the gradients
    are summed over ranks, so the update equals one process's on the whole batch. The NLL is
    computed in the logits' dtype (transformers' own loss always upcasts to float32), so a
    float64 model trains in float64 throughout (tests/test_pretrain.py compares in float64).
    """
    import torch
    import torch.nn.functional as F

    from unmem.logprobs import IGNORE_INDEX

    rows = slice(rank, None, ranks)
    # The token each position predicts, IGNORE_INDEX after the last: the logits need no shifted copy.
    targets = F.pad(batch["labels"][rows, 1:], (0, 1), value=IGNORE_INDEX)  # (rows, time)
    total = (batch["labels"][:, 1:] != IGNORE_INDEX).sum().clamp(min=1)
    loss = torch.zeros(())
    if (targets != IGNORE_INDEX).any():
        logits = model(
            input_ids=batch["input_ids"][rows], attention_mask=batch["attention_mask"][rows]
        ).logits
        nll = F.cross_entropy(
            logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        loss = nll / total
        loss.backward()
    if ranks > 1:
        import torch.distributed as dist

        for parameter in model.parameters():
            if parameter.grad is None:  # a rank without rows in a short last batch
                parameter.grad = torch.zeros_like(parameter)
            dist.all_reduce(parameter.grad)
        loss = loss.detach().clone()
        dist.all_reduce(loss)
    return float(loss.detach())


def _warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> Any:
    """Linear warmup, then cosine decay to 0: transformers' schedule, without importing its
    optimisation module (which pulls in peft, seconds per training process)."""
    import torch

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
