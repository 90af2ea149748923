"""``unlearn()``: check the inputs, build the method's step, run the loop, publish the result.

Where things go (``OUT`` is ``--out``):
- while running, ``OUT.lock`` names the process that owns ``OUT`` and ``OUT.work/``
  holds checkpoints and the training log, so a killed run resumes from its last
  checkpoint (only if it is the same run: ``unmem.train.checkpoints``);
- on success ``OUT/`` appears at once (atomic rename) with the model or adapter
  (safetensors), ``run_config.json`` (resolved), ``train_log.jsonl`` and
  ``summary.json``; ``OUT.work/`` is then removed. No input is ever written.

Works unchanged under ``accelerate launch -m unmem unlearn ...`` (data parallel).
"""

from __future__ import annotations

import contextlib
import functools
import random
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unmem.config import CalibratedStop, UnlearnConfig
from unmem.data.collate import Example, PromptFormat, collate, encode_records
from unmem.data.refusals import refusal_record
from unmem.data.windows import check_windows_fit, is_text_file, read_windows
from unmem.errors import UnmemError
from unmem.io import atomic_dir, exclusive_lock, hash_files, read_records, write_json
from unmem.methods.registry import MethodSpec, SetupContext, get_method
from unmem.models import context_length, frozen_copy, model_hash, resolve_model_dir
from unmem.train.batches import BatchSchedule, Phase, make_loader, with_layout
from unmem.train.checkpoints import Checkpoints, run_record
from unmem.train.forward import MethodForward, accepts_logits_to_keep
from unmem.train.loop import Loop, LoopResult, StoppingRule, run_loop
from unmem.train.output import assert_finite, method_config_json, save_unlearned
from unmem.train.reference import (
    CacheRequest,
    ReferenceCache,
    ReferenceNotCacheable,
    build_reference_cache,
)
from unmem.train.setup import (
    check_output,
    deepspeed_batch_size,
    load_policy,
    lora_from,
    make_accelerator,
    optimizer_and_schedule,
    peak_memory_mb,
)
from unmem.train.stopping import CalibratedStopping, PerplexityStop


@dataclass
class Pair:
    """A forget example with the same question answered by a refusal (for IdkDPO, IdkNLL, FLAT, Chen)."""

    forget: Example
    idk: Example | None


RoleCollate = Callable[[list[Example]], dict[str, Any]]


def _role_collate(role: str, pad_token_id: int, cache: ReferenceCache | None) -> RoleCollate:
    """Collate one role's examples: padded tensors, layout ints and the cached reference rows."""

    def collate_role(examples: list[Example]) -> dict[str, Any]:
        batch = with_layout(collate(examples, pad_token_id))
        return batch if cache is None else cache.attach(role, batch, examples)

    return collate_role


def _collate_pairs(pairs: list[Pair], forget: RoleCollate, idk: RoleCollate) -> dict[str, Any]:
    batch = {"forget": forget([p.forget for p in pairs])}
    if pairs[0].idk is not None:
        batch["idk"] = idk([p.idk for p in pairs if p.idk is not None])
    return batch


QA_FIELDS = {"required": ("question", "answer"), "types": {"question": str, "answer": str}}


def read_qa(path: str | Path) -> list[dict[str, Any]]:
    return read_records(path, QA_FIELDS["required"], types=QA_FIELDS["types"])


def read_training_records(path: str | Path) -> list[dict[str, Any]]:
    """QA pairs, or text windows: a ``.txt`` file, ``text`` records or ``prompt``/``gt`` records
    (``unmem.data.windows``: long texts are cut into windows, the continuations trained on)."""
    return read_windows(path) if is_text_file(path) else read_qa(path)


def load_unlearning_data(
    path: str | Path, tokenizer: Any, fmt: PromptFormat, max_length: int
) -> tuple[list[dict[str, Any]], list[Example]]:
    records = read_training_records(path)
    return records, encode_records(tokenizer, records, fmt, max_length=max_length)


def heldout_examples(
    records: list[dict[str, Any]], tokenizer: Any, fmt: PromptFormat, max_length: int
) -> list[Example]:
    """QA pairs or text windows, as a stopping rule scores them (the answers, the continuations)."""
    return encode_records(tokenizer, records, fmt, max_length=max_length)


def _make_idk(
    records: list[dict[str, Any]],
    tokenizer: Any,
    fmt: PromptFormat,
    max_length: int,
    seed: int,
    style: str = "whole",
) -> list[Example]:
    """Each forget record answered with a refusal (``unmem.data.refusals.refusal_record``)."""
    rng = random.Random(seed)
    paired = [refusal_record(r, rng.choice, style) for r in records]
    return encode_records(tokenizer, paired, fmt, max_length=max_length)


def _sample(items: list[Any], limit: int, seed: int) -> list[Any]:
    if len(items) <= limit:
        return items
    return random.Random(seed).sample(items, limit)


@dataclass
class Inputs:
    """Every file a run reads (resolved), checked before the model is loaded."""

    model: Path
    forget: Path
    retain: Path | None
    forget_records: list[dict[str, Any]]
    retain_records: list[dict[str, Any]]
    extra_paths: dict[str, Path]  # early-stop / calibration data, by what they are for
    extra: dict[str, list[dict[str, Any]]]

    @property
    def paths(self) -> dict[str, Path | None]:
        return {"model": self.model, "forget": self.forget, "retain": self.retain} | dict(self.extra_paths)

    def hashes(self) -> dict[str, str | None]:
        """What the checkpoints of a run depend on: model and data files by content."""
        data = {
            name: hash_files([path]) if path else None for name, path in self.paths.items() if name != "model"
        }
        return {"model": model_hash(self.model)} | data


def _extra_paths(config: UnlearnConfig) -> dict[str, Path]:
    paths: dict[str, Path | None] = {}
    if config.early_stop is not None:
        paths["early-stop data"] = config.early_stop.data
    if config.calibrated_stop is not None:
        if config.calibrated_stop.holdout is None:
            raise UnmemError(
                "calibrated stopping needs a holdout set: data like the forget set that the model never "
                "saw (--stop-holdout FILE, or calibrated_stop.holdout)"
            )
        paths["calibration holdout"] = config.calibrated_stop.holdout
        paths["calibration utility data"] = config.calibrated_stop.utility
    return {name: Path(path).resolve() for name, path in paths.items() if path is not None}


def read_inputs(
    model_dir: str | Path,
    forget: str | Path,
    retain: str | Path | None,
    config: UnlearnConfig,
    needs_retain: bool,
) -> Inputs:
    """Resolve and read every input; a bad file fails here, before any model is loaded."""
    use_retain = retain is not None and (needs_retain or config.calibrated_stop is not None)
    retain_path = Path(retain).resolve() if use_retain and retain is not None else None
    extra_paths = _extra_paths(config)
    return Inputs(
        model=resolve_model_dir(model_dir).resolve(),
        forget=Path(forget).resolve(),
        retain=retain_path,
        forget_records=read_training_records(forget),
        retain_records=read_training_records(retain_path) if retain_path else [],
        extra_paths=extra_paths,
        extra={name: read_training_records(path) for name, path in extra_paths.items()},
    )


def _stopping_rules(
    config: UnlearnConfig, inputs: Inputs, forget: list[Example], tokenizer: Any, fmt: PromptFormat
) -> list[StoppingRule]:
    rules: list[StoppingRule] = []
    pad = tokenizer.pad_token_id

    def examples(records: list[dict[str, Any]], limit: int | None = None) -> list[Example]:
        chosen = records if limit is None else _sample(records, limit, config.seed)
        return heldout_examples(chosen, tokenizer, fmt, config.max_length)

    if config.early_stop is not None:
        rules.append(PerplexityStop(config.early_stop, examples(inputs.extra["early-stop data"]), pad))
    calibrated: CalibratedStop | None = config.calibrated_stop
    if calibrated is not None:
        utility_records = inputs.extra.get("calibration utility data") or inputs.retain_records
        rules.append(
            CalibratedStopping(
                calibrated,
                _sample(forget, calibrated.max_samples, config.seed),
                examples(inputs.extra["calibration holdout"], calibrated.max_samples),
                examples(utility_records, calibrated.max_samples) if utility_records else None,
                pad,
            )
        )
    return rules


def _input_paths(
    model_dir: str | Path, forget: str | Path, retain: str | Path | None, config: UnlearnConfig
) -> dict[str, Path | None]:
    """Every path a run reads, as given (``check_output`` resolves links)."""
    paths: dict[str, Path | None] = {"model": Path(model_dir), "forget": Path(forget)}
    paths["retain"] = None if retain is None else Path(retain)
    base = _base_model(Path(model_dir))
    if base is not None:
        paths["base model"] = base
    return paths | dict(_extra_paths(config))


def _base_model(model_dir: Path) -> Path | None:
    """The base an adapter or method-layer output stands on (it is read too)."""
    from unmem.models import MODEL_CARD, card_base

    for folder in (model_dir, model_dir / "model"):
        if (folder / MODEL_CARD).is_file():
            return card_base(folder) or folder
    return None


def _check_focus(method: str, method_cfg: Any, inputs: Inputs) -> None:
    """A focused forget loss, or a refusal of the spans only, needs the records' sensitive spans:
    fail before loading any model."""
    focus = getattr(method_cfg, "focus", "none")
    if focus != "none" and not any(record.get("sensitive") for record in inputs.forget_records):
        raise UnmemError(
            f"{inputs.forget}: method '{method}' with focus={focus!r} weights the `sensitive` spans of "
            "the forget records, and no record has one; add the field or set -p focus=none"
        )
    if getattr(method_cfg, "refusal", "whole") == "span":
        for line, record in enumerate(inputs.forget_records, start=1):
            answer = str(record.get("answer", ""))
            if "question" in record and not any(s and s in answer for s in record.get("sensitive") or ()):
                raise UnmemError(
                    f"{inputs.forget}:{line}: method '{method}' with refusal='span' replaces the `sensitive` "
                    "spans of each answer, and this one has none in its answer; add them or set -p refusal=whole"
                )


def unlearn(
    model_dir: str | Path,
    forget_path: str | Path,
    out_dir: str | Path,
    config: UnlearnConfig,
    *,
    retain_path: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = True,
    stop_after_steps: int | None = None,
) -> Path:
    """Unlearn ``forget_path`` from the model in ``model_dir``; returns the output directory.

    A killed run is resumed from its last checkpoint when called again with the same
    inputs and settings (``resume=False`` discards the checkpoints instead).
    ``stop_after_steps`` ends the process's work early without finalising (tests use it
    to simulate a killed run); it then returns the work folder.
    """
    spec = get_method(config.method)
    method_cfg = spec.make_config(config.method_args)
    needs = spec.needs(method_cfg)
    if needs.retain and retain_path is None:
        raise UnmemError(f"method '{spec.name}' needs a retain set: pass --retain FILE")
    out = check_output(out_dir, _input_paths(model_dir, forget_path, retain_path, config), overwrite)
    inputs = read_inputs(model_dir, forget_path, retain_path, config, needs.retain)
    _check_focus(spec.name, method_cfg, inputs)
    accelerator = make_accelerator(config)
    lock = exclusive_lock(out) if accelerator.is_main_process else contextlib.nullcontext()
    with lock:
        return _unlearn_locked(
            inputs, out, config, spec, method_cfg, accelerator, overwrite, resume, stop_after_steps
        )


def _unlearn_locked(
    inputs: Inputs,
    out: Path,
    config: UnlearnConfig,
    spec: MethodSpec,
    method_cfg: Any,
    accelerator: Any,
    overwrite: bool,
    resume: bool,
    stop_after_steps: int | None,
) -> Path:
    model, tokenizer = load_policy(config, inputs.model)
    fmt = PromptFormat.for_tokenizer(tokenizer, config.chat_template)
    data = _encode_roles(inputs, tokenizer, fmt, config, method_cfg, spec.needs(method_cfg))
    _check_context(inputs, data, context_length(model))
    layers = spec.hidden_layers(method_cfg, model.config.num_hidden_layers) if spec.hidden_layers else []
    hashes = inputs.hashes()
    reference = _reference(model, data, config, spec, method_cfg, accelerator, layers, hashes["model"], out)
    live_ref = reference if isinstance(reference, torch.nn.Module) else None
    cache = reference if isinstance(reference, ReferenceCache) else None
    model = _wrap_model(model, spec, method_cfg, config)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise UnmemError(f"method '{spec.name}': the model has no trainable parameters")
    phases = _phases(data, config, spec, method_cfg, tokenizer.pad_token_id, accelerator, cache)
    schedule = BatchSchedule(accelerator, phases, config.grad_accum)
    total_steps = config.max_steps or schedule.steps_per_epoch * config.epochs
    optimizer, scheduler = optimizer_and_schedule(trainable, config, total_steps, accelerator)
    deepspeed_batch_size(accelerator, config.batch_size)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    device = accelerator.device
    if live_ref is not None:
        live_ref.to(device)
    unwrapped = accelerator.unwrap_model(model)
    context = SetupContext(
        unwrapped, live_ref, tokenizer, inputs.forget_records, inputs.retain_records, device
    )
    state = spec.setup(context, method_cfg) if spec.setup else None

    checkpoints = Checkpoints(out, accelerator, config.keep_checkpoints)
    record = run_record(
        config=config.model_dump(mode="json"),
        method_config=method_config_json(method_cfg),
        hashes=hashes,
    )
    start = checkpoints.start(record, resume)
    if start is not None and accelerator.is_main_process:
        print(f"resuming from step {start.step} of {total_steps} ({checkpoints.work})", file=sys.stderr)
    loop = Loop(
        accelerator,
        model,
        optimizer,
        scheduler,
        schedule,
        total_steps,
        checkpoints,
        config.grad_clip,
        checkpoint_every=config.checkpoint_every,
        stoppers=_stopping_rules(config, inputs, data["forget"], tokenizer, fmt),
        desc=f"method '{spec.name}'",
    )
    step = MethodForward(
        spec,
        method_cfg,
        reference,
        layers,
        state,
        window=accepts_logits_to_keep(unwrapped),
        fuse=config.fuse_passes,
    )
    result = run_loop(loop, step, start, stop_after_steps)
    if not result.finished:
        return checkpoints.work
    report = cache.report if cache is not None else {"mode": "live" if live_ref is not None else None}
    return _publish(
        loop, result, inputs, out, config, spec, method_cfg, tokenizer, context, overwrite, report
    )


def _encode_roles(
    inputs: Inputs, tokenizer: Any, fmt: PromptFormat, config: UnlearnConfig, method_cfg: Any, needs: Any
) -> dict[str, list[Example]]:
    """The tokenised examples of every role the method uses: forget, retain, idk (refusals)."""
    encode = functools.partial(encode_records, tokenizer, fmt=fmt, max_length=config.max_length)
    data = {"forget": encode(inputs.forget_records)}
    data["retain"] = encode(inputs.retain_records) if needs.retain else []
    if needs.idk:
        style = getattr(method_cfg, "refusal", "whole")  # FLAT and Chen et al. may refuse only the spans
        data["idk"] = _make_idk(inputs.forget_records, tokenizer, fmt, config.max_length, config.seed, style)
    return data


def _check_context(inputs: Inputs, data: dict[str, list[Example]], context: int) -> None:
    """A text window longer than the model's context (``max_length`` above it) is an error naming it."""
    for role, records in (("forget", inputs.forget_records), ("retain", inputs.retain_records)):
        examples = data.get(role) or []
        windows = [(r, len(e.input_ids)) for r, e in zip(records, examples, strict=False) if "prompt" in r]
        check_windows_fit([r for r, _ in windows], [n for _, n in windows], context, "the model's context")


def _reference(
    model: torch.nn.Module,
    data: dict[str, list[Example]],
    config: UnlearnConfig,
    spec: MethodSpec,
    method_cfg: Any,
    accelerator: Any,
    layers: list[int],
    model_hash: str,
    out: Path,
) -> torch.nn.Module | ReferenceCache | None:
    """What the method reads from the starting model: a cache of exactly that (the default), or the
    live frozen copy; None when the method reads nothing from it.

    A method that needs the reference but declares no ``ref_outputs``, and a model whose logits
    cannot be rebuilt from its output head, get the live copy.
    """
    if not spec.needs(method_cfg).ref:
        return None
    declared = spec.reference_outputs(method_cfg)
    if config.reference == "live" or not declared:
        return frozen_copy(model)
    request = CacheRequest(
        declared=declared,
        examples={role: data[role] for role in declared},
        layers=layers,
        pad_id=0,  # padding is on the right and masked: its id never reaches a real token's output
        batch_size=4 * config.batch_size,  # no gradients: four times a training batch costs less
        autocast=torch.bfloat16 if config.precision == "bf16" else None,
    )
    cache_dir = Path(config.reference_cache or out.parent / ".unmem-cache").resolve() / "reference"
    try:
        return build_reference_cache(
            model, request, accelerator.device, model_hash=model_hash, cache_dir=cache_dir
        )
    except ReferenceNotCacheable as exc:
        if accelerator.is_main_process:
            print(f"{exc}; running the reference live instead", file=sys.stderr)
        return frozen_copy(model)


def _phases(
    data: dict[str, list[Example]],
    config: UnlearnConfig,
    spec: MethodSpec,
    method_cfg: Any,
    pad: int,
    accelerator: Any,
    cache: ReferenceCache | None,
) -> list[Phase]:
    """Forget batches (with their refusals when the method needs them) and retain batches."""
    idk = data.get("idk")
    pairs = [Pair(f, None if idk is None else idk[i]) for i, f in enumerate(data["forget"])]
    forget_collate, idk_collate = _role_collate("forget", pad, cache), _role_collate("idk", pad, cache)
    forget_loader = make_loader(
        pairs,
        config.batch_size,
        config.seed,
        lambda b: _collate_pairs(b, forget_collate, idk_collate),
        accelerator,
    )
    retain_loader = None
    if data["retain"]:
        retain_collate = _role_collate("retain", pad, cache)
        retain_loader = make_loader(
            data["retain"], config.batch_size, config.seed + 1, retain_collate, accelerator
        )
    if spec.schedule != "alternate":
        return [Phase(forget_loader, None, companion=retain_loader)]
    # EUL: a retain phase, then a forget phase; ``epochs`` counts the pairs.
    phases = [Phase(forget_loader, None)]
    if retain_loader is not None:
        limit = (
            spec.retain_phase_batches(method_cfg, len(forget_loader)) if spec.retain_phase_batches else None
        )
        phases.insert(0, Phase(retain_loader, "retain", limit=limit))
    return phases


def _wrap_model(
    model: torch.nn.Module, spec: MethodSpec, method_cfg: Any, config: UnlearnConfig
) -> torch.nn.Module:
    if spec.prepare_model is not None:
        if config.lora:
            raise UnmemError(f"method '{spec.name}' trains its own layers; drop --lora")
        return spec.prepare_model(model, method_cfg)
    if config.lora:
        return lora_from(model, config)
    if spec.restrict_training is not None:
        spec.restrict_training(model, method_cfg)
    return model


def _published_step(loop: Loop, result: LoopResult) -> int:
    """Put back the weights a stopping rule selected, if not the last ones; returns their step."""
    for rule in loop.stoppers:
        if isinstance(rule, CalibratedStopping):
            chosen = rule.selected().step
            if chosen != result.progress.step:
                loop.accelerator.wait_for_everyone()
                loop.checkpoints.load_selected(loop.unwrapped)
            return chosen
    return result.progress.step


def _summary(
    loop: Loop,
    result: LoopResult,
    inputs: Inputs,
    spec: MethodSpec,
    published: int,
    reference: dict[str, Any],
) -> dict[str, Any]:
    progress = result.progress
    seconds = max(progress.seconds, 1e-9)
    return {
        "method": spec.name,
        "model": str(inputs.model),
        "forget": str(inputs.forget),
        "retain": str(inputs.retain) if inputs.retain else None,
        "steps": progress.step,
        "published_step": published,
        "epochs_started": progress.position.epoch,
        "stop_reason": result.stop_reason,
        "train_seconds": round(progress.seconds, 2),
        "tokens": progress.tokens,
        "tokens_per_second": round(progress.tokens / seconds, 1),
        "peak_memory_mb": round(peak_memory_mb(loop.accelerator.device), 1),
        "processes": loop.accelerator.num_processes,
        "trainable_parameters": sum(p.numel() for p in loop.unwrapped.parameters() if p.requires_grad),
        "final": result.last_logs,
        "reference": reference,
        "stopping": {rule.name: rule.summary(result.stop_reason) for rule in loop.stoppers},
    }


def _publish(
    loop: Loop,
    result: LoopResult,
    inputs: Inputs,
    out: Path,
    config: UnlearnConfig,
    spec: MethodSpec,
    method_cfg: Any,
    tokenizer: Any,
    context: SetupContext,
    overwrite: bool,
    reference: dict[str, Any],
) -> Path:
    accelerator = loop.accelerator
    published = _published_step(loop, result)
    accelerator.wait_for_everyone()
    # Collective under ZeRO-3/FSDP (gathers the shards); under DDP just the unwrapped weights.
    state_dict = accelerator.get_state_dict(loop.model) if spec.prepare_model is None else None
    if accelerator.is_main_process:
        model = loop.unwrapped
        assert_finite(model, loop.desc, loop.checkpoints.last())
        summary = _summary(loop, result, inputs, spec, published, reference)
        with atomic_dir(out, overwrite=overwrite) as staging:
            save_unlearned(model, tokenizer, spec, config, inputs.model, staging, state_dict)
            if spec.finalize is not None:
                spec.finalize(model, context, method_cfg, staging)
            write_json(
                staging / "run_config.json",
                {"unlearn": config.model_dump(mode="json"), "method_config": method_config_json(method_cfg)},
            )
            shutil.copy(loop.checkpoints.log_path, staging / "train_log.jsonl")
            write_json(staging / "summary.json", summary)
        loop.checkpoints.remove()
    accelerator.wait_for_everyone()
    return out
