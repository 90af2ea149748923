"""The cached reference, fused passes and logit windows give the live, separate, full-width
results: loss and gradients per reference-based method on a tiny Llama.

The cache keeps exact values (summed log-probs, the output head's inputs from which a frozen
head copy rebuilds the logits, hidden states), so cached and live are the same computation:
both run on a float64 model and agree to float64 rounding (tests/float_bounds.py), with the
policy moved away from the reference (at θ = ref most errors would cancel).
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from float_bounds import EPS_BF16, assert_same_computation
from unmem.data.collate import PromptFormat, encode_records
from unmem.data.refusals import load_idk_answers
from unmem.methods.base import HIDDEN, LOGITS, SEQ_LOGPS
from unmem.methods.registry import SetupContext, get_method
from unmem.models import frozen_copy
from unmem.train.forward import ROLES, MethodForward, accepts_logits_to_keep
from unmem.train.reference import CacheRequest, build_reference_cache
from unmem.train.unlearning import Pair, _collate_pairs, _role_collate

pytestmark = pytest.mark.numerics  # CI runs these again on other kernels (issue 21)
FORGET = [
    {"question": f"Where was {name} born?", "answer": f"{name} was born in {city}."}
    for name, city in [("Ilvan Marek", "Dunmore"), ("Sela Kovar", "Fennick"), ("Orin Vale", "Corriven")]
]
RETAIN = [
    {"question": f"What genre does {name} write?", "answer": f"{name} writes {genre} and more."}
    for name, genre in [("Ada Quill", "gothic fiction"), ("Bram Holt", "poetry"), ("Cora Finch", "satire")]
]
# Reference-based methods (and a KL retain term on a reference-free one), with configs that read
# every kind of reference output somewhere.
REFERENCE_METHODS = {
    "npo": {"retain_loss": "kl"},
    "idk_dpo": {},
    "kl": {},
    "di": {"alpha": 1.0, "retain_loss": "kl"},
    "eul": {},
    "chen": {},
    "rmu": {"alpha": 10.0},
    "grad_diff": {"retain_loss": "kl"},
}


def _perturbed(model: torch.nn.Module, scale: float = 0.05) -> torch.nn.Module:
    """A copy moved away from the reference, so that policy ≠ ref (θ = ref hides most errors)."""
    policy = copy.deepcopy(model).train()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in policy.parameters():
            param.add_(scale * torch.randn(param.shape, generator=generator))
    return policy


def _data(tokenizer) -> dict[str, list]:
    fmt = PromptFormat()
    refusals = load_idk_answers()
    rng = random.Random(0)
    idk = [{"question": r["question"], "answer": rng.choice(refusals)} for r in FORGET]
    return {
        "forget": encode_records(tokenizer, FORGET, fmt),
        "retain": encode_records(tokenizer, RETAIN, fmt),
        "idk": encode_records(tokenizer, idk, fmt),
    }


def _step_batch(data: dict[str, list], pad: int, cache) -> dict:
    pairs = [Pair(f, i) for f, i in zip(data["forget"], data["idk"], strict=True)]
    batch = _collate_pairs(pairs, _role_collate("forget", pad, cache), _role_collate("idk", pad, cache))
    batch["retain"] = _role_collate("retain", pad, cache)(data["retain"])
    return batch


def _loss_and_grads(step, model, batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss, _ = step(model, batch)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad and p.grad is not None]
    return loss.detach(), grads


def _method_setup(name: str, args: dict, tiny_tokenizer, make_tiny_llama):
    """(spec, cfg, reference model, policy, layers, state) as unlearn() builds them, in float64."""
    spec = get_method(name)
    cfg = spec.make_config(args)
    reference = make_tiny_llama().double().eval()
    policy = _perturbed(reference)
    if spec.prepare_model is not None:  # EUL: the reference is the base without its layers
        policy = spec.prepare_model(copy.deepcopy(reference), cfg)
        with torch.no_grad():
            for name_, param in policy.named_parameters():
                if "unlearning_layer" in name_:
                    param.add_(0.1 * torch.randn(param.shape, generator=torch.Generator().manual_seed(2)))
        policy.double().train()  # the method's own layers are made float32
    n_layers = reference.config.num_hidden_layers
    layers = spec.hidden_layers(cfg, n_layers) if spec.hidden_layers else []
    context = SetupContext(policy, reference, tiny_tokenizer, FORGET, RETAIN, torch.device("cpu"))
    state = spec.setup(context, cfg) if spec.setup else None
    return spec, cfg, reference, policy, layers, state


def _cache(spec, cfg, reference, data, layers, cache_dir=None):
    request = CacheRequest(spec.reference_outputs(cfg), data, layers, pad_id=0, batch_size=2)
    return build_reference_cache(
        reference, request, torch.device("cpu"), model_hash="test", cache_dir=cache_dir
    )


@pytest.mark.parametrize("name", sorted(REFERENCE_METHODS))
def test_cached_reference_matches_live(name, tiny_tokenizer, make_tiny_llama):
    spec, cfg, reference, policy, layers, state = _method_setup(
        name, REFERENCE_METHODS[name], tiny_tokenizer, make_tiny_llama
    )
    assert spec.needs(cfg).ref and spec.reference_outputs(cfg)
    data = _data(tiny_tokenizer)
    pad = tiny_tokenizer.pad_token_id
    window = accepts_logits_to_keep(policy)
    live = MethodForward(spec, cfg, frozen_copy(reference), layers, state, window=window)
    cache = _cache(spec, cfg, reference, data, layers)
    cached = MethodForward(spec, cfg, cache, layers, state, window=window)

    live_loss, live_grads = _loss_and_grads(live, policy, _step_batch(data, pad, None))
    loss, grads = _loss_and_grads(cached, policy, _step_batch(data, pad, cache))
    assert abs(float(live_loss)) > 1e-3  # a real comparison, not 0 = 0
    # Bound: the same computation in float64 (float_bounds.SAME_COMPUTATION).
    assert_same_computation(loss, live_loss)
    for got, expected in zip(grads, live_grads, strict=True):
        assert_same_computation(got, expected)


@pytest.mark.parametrize("name", ["grad_diff", "idk_dpo", "rmu"])
def test_fused_and_windowed_passes_match_separate_full_ones(name, tiny_tokenizer, make_tiny_llama):
    """One concatenated pass with logits from the first answer on = separate full-width passes."""
    spec, cfg, reference, policy, layers, state = _method_setup(
        name, {"alpha": 10.0} if name == "rmu" else {}, tiny_tokenizer, make_tiny_llama
    )
    data = _data(tiny_tokenizer)
    pad = tiny_tokenizer.pad_token_id
    cache = _cache(spec, cfg, reference, data, layers) if spec.needs(cfg).ref else None
    batch = _step_batch(data, pad, cache)
    assert len({batch[role]["input_ids"].shape[1] for role in ROLES}) > 1  # fusing really pads
    separate = MethodForward(spec, cfg, cache, layers, state, window=False, fuse=False)
    fused = MethodForward(spec, cfg, cache, layers, state, window=True, fuse=True)
    expected_loss, expected_grads = _loss_and_grads(separate, policy, batch)
    loss, grads = _loss_and_grads(fused, policy, batch)
    # Bound: the same computation in float64 (float_bounds.SAME_COMPUTATION).
    assert_same_computation(loss, expected_loss)
    for got, expected in zip(grads, expected_grads, strict=True):
        assert_same_computation(got, expected)


def test_disk_cache_is_reused_and_keyed_by_settings(tmp_path, tiny_tokenizer, make_tiny_llama):
    spec = get_method("npo")
    cfg = spec.make_config({"retain_loss": "kl"})
    reference = make_tiny_llama().eval()
    data = _data(tiny_tokenizer)
    first = _cache(spec, cfg, reference, data, [], cache_dir=tmp_path)
    again = _cache(spec, cfg, reference, data, [], cache_dir=tmp_path)
    outputs = first.report["outputs"]
    assert set(outputs) == {"forget/seq_logps", "retain/logits"}
    assert not any(o["reused"] for o in outputs.values())
    assert all(o["reused"] for o in again.report["outputs"].values())
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    # Other data (or another model) is another file: the key covers the token ids.
    other = dict(data, forget=data["forget"][:2])
    third = _cache(spec, cfg, reference, other, [], cache_dir=tmp_path)
    assert not third.report["outputs"]["forget/seq_logps"]["reused"]
    assert third.report["outputs"]["retain/logits"]["reused"]
    for role, kind in (("forget", SEQ_LOGPS), ("retain", LOGITS)):
        for name, tensor in first.outputs[role][kind].tensors.items():
            # Bound: none; a reused file holds the computed tensor's exact bits.
            torch.testing.assert_close(again.outputs[role][kind].tensors[name], tensor, rtol=0, atol=0)


def test_every_reference_method_declares_what_it_reads():
    from unmem.methods.registry import all_methods

    for name, spec in all_methods().items():
        cfg = spec.make_config()
        declared = spec.reference_outputs(cfg)
        assert bool(declared) == spec.needs(cfg).ref == spec.needs_ref, name
    assert get_method("rmu").reference_outputs(get_method("rmu").make_config()) == {"retain": {HIDDEN}}
    assert get_method("npo").reference_outputs(get_method("npo").make_config()) == {"forget": {SEQ_LOGPS}}


def test_a_model_whose_logits_are_not_its_head_cannot_be_cached(tiny_tokenizer, make_tiny_llama):
    from unmem.train.reference import ReferenceNotCacheable

    reference = make_tiny_llama().eval()
    # A final transform after the output head (as Gemma's logit soft-capping is).
    reference.register_forward_hook(lambda module, args, out: out.__setitem__("logits", 2 * out.logits))
    spec = get_method("kl")
    with pytest.raises(ReferenceNotCacheable, match="reference: live"):
        _cache(spec, spec.make_config(), reference, _data(tiny_tokenizer), [])


def test_unlearn_with_cached_reference_equals_live_and_reuses_the_cache(
    tmp_path, tiny_model_dir, float64_models
):
    import json

    from unmem.config import build_config
    from unmem.train import unlearn

    forget, retain = tmp_path / "forget.jsonl", tmp_path / "retain.jsonl"
    forget.write_text("".join(json.dumps(r) + "\n" for r in FORGET))
    retain.write_text("".join(json.dumps(r) + "\n" for r in RETAIN))
    common = {"method": "npo", "method_args": {"retain_loss": "kl"}, "lr": 1e-3, "epochs": 2, "batch_size": 2}
    runs = {}
    for name, mode in (("live", "live"), ("cached", "cached"), ("again", "cached")):
        config = build_config({**common, "reference": mode, "device": "cpu"})
        runs[name] = unlearn(tiny_model_dir, forget, tmp_path / name, config, retain_path=retain)
    summaries = {name: json.loads((out / "summary.json").read_text()) for name, out in runs.items()}
    assert summaries["live"]["reference"] == {"mode": "live"}
    cached = summaries["cached"]["reference"]
    assert cached["mode"] == "cached" and set(cached["outputs"]) == {"forget/seq_logps", "retain/logits"}
    assert not any(o["reused"] for o in cached["outputs"].values())
    assert all(o["reused"] for o in summaries["again"]["reference"]["outputs"].values())
    for output in cached["outputs"].values():  # next to the output, never in the model's folder
        assert Path(output["file"]).parent == (tmp_path / ".unmem-cache" / "reference").resolve()
    live = load_file(runs["live"] / "model" / "model.safetensors")
    for name in ("cached", "again"):
        got = load_file(runs[name] / "model" / "model.safetensors")
        for key, tensor in live.items():  # Bound: the same run in float64 (float_bounds.SAME_COMPUTATION).
            assert_same_computation(got[key], tensor, msg=key)


def test_cache_follows_the_runs_mixed_precision(tiny_tokenizer, make_tiny_llama):
    """Under bf16 autocast the outputs are computed (and the head rebuilds logits) in bf16, as the
    policy's own forward is: close to float32, and keyed apart from it."""
    spec = get_method("npo")
    cfg = spec.make_config({"retain_loss": "kl"})
    reference = make_tiny_llama().eval()
    data = _data(tiny_tokenizer)
    declared = spec.reference_outputs(cfg)
    exact = build_reference_cache(
        reference, CacheRequest(declared, data, [], 0, 4), torch.device("cpu"), model_hash="t", cache_dir=None
    )
    bf16 = build_reference_cache(
        reference,
        CacheRequest(declared, data, [], 0, 4, autocast=torch.bfloat16),
        torch.device("cpu"),
        model_hash="t",
        cache_dir=None,
    )
    batch = _step_batch(data, tiny_tokenizer.pad_token_id, bf16)
    side = bf16.side(batch["retain"], start=0)
    assert side.logits.dtype == torch.bfloat16
    fp32 = exact.outputs["forget"][SEQ_LOGPS].tensors["seq_logps"]
    low = bf16.outputs["forget"][SEQ_LOGPS].tensors["seq_logps"]
    answer_tokens = torch.tensor([sum(label != -100 for label in e.labels) for e in data["forget"]])
    with torch.no_grad():
        scale = max(
            float(reference(input_ids=torch.tensor([e.input_ids])).logits.abs().max()) for e in data["forget"]
        )
    # Bound: bf16 moves each logit by about eps_bf16·max|z|, so log p(label) = z_y − logsumexp(z) by
    # twice that, summed over the answer's tokens. Not equal: the cache really ran in bf16.
    assert ((low - fp32).abs() <= answer_tokens * 2 * EPS_BF16 * scale).all() and not torch.equal(low, fp32)


def test_cli_reference_flag(tmp_path, tiny_model_dir):
    import json

    from typer.testing import CliRunner

    from unmem.cli import app

    forget = tmp_path / "forget.jsonl"
    forget.write_text("".join(json.dumps(r) + "\n" for r in FORGET))
    common = ["unlearn", "--model", str(tiny_model_dir), "--forget", str(forget), "--method", "di"]
    common += ["--epochs", "1", "--batch-size", "3", "--device", "cpu"]
    result = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "live"), "--reference", "live"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "live" / "summary.json").read_text())["reference"] == {"mode": "live"}
    result = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "bad"), "--reference", "sometimes"])
    assert result.exit_code == 2 and "field 'reference'" in result.output
