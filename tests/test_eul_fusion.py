"""EUL: fusing per-request unlearning layers with Gram matrices, and the model surgery."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from float_bounds import EPS32, SAME_COMPUTATION, default_dtype
from unmem.errors import UnmemError
from unmem.methods.base import Side
from unmem.methods.eul import (
    ADAPTER_NAME,
    GRAMS_FILE,
    EULConfig,
    collect_grams,
    eul_finalize,
    eul_prepare_model,
    fuse_unlearning_layers,
    unlearning_layer_state_dict,
)
from unmem.methods.registry import SetupContext

pytestmark = pytest.mark.numerics  # CI runs these again on other kernels (issue 21)
D_IN, D_OUT = 8, 5


def gram(x: torch.Tensor) -> torch.Tensor:
    """[x, 1]ᵀ[x, 1], as collect_grams accumulates it."""
    xa = torch.cat([x, torch.ones(len(x), 1)], dim=1)
    return xa.T @ xa


def fit_linear(x: torch.Tensor, y: torch.Tensor, steps: int = 300, seed: int = 0) -> nn.Linear:
    """Genuinely train a linear map on one request's data with SGD (Adam), from a random init."""
    torch.manual_seed(seed)
    layer = nn.Linear(x.shape[1], y.shape[1])
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.mse_loss(layer(x), y).backward()
        opt.step()
    return layer


def as_dict(layer: nn.Linear, name: str = "a.unlearning_layer.down") -> dict[str, torch.Tensor]:
    return {f"{name}.weight": layer.weight.detach().clone(), f"{name}.bias": layer.bias.detach().clone()}


def apply(weights: dict[str, torch.Tensor], x: torch.Tensor, name: str = "a.unlearning_layer.down"):
    return x @ weights[f"{name}.weight"].T + weights[f"{name}.bias"]


def two_requests(seed: int, rank: int | None):
    """Two requests whose inputs live in disjoint regions: affine planes of dimension ``rank``
    (None: full-rank Gaussians with different means and scales), each fit to its own target map."""
    g = torch.Generator().manual_seed(seed)
    xs = []
    for shift in (3.0, -3.0):
        if rank is None:
            x = torch.randn(300, D_IN, generator=g) * torch.rand(D_IN, generator=g) * 2 + shift
        else:
            basis = torch.randn(rank, D_IN, generator=g)
            x = torch.randn(300, rank, generator=g) @ basis + shift * torch.randn(D_IN, generator=g)
        xs.append(x)
    targets = [torch.randn(D_OUT, D_IN, generator=g) for _ in xs]
    layers = [fit_linear(x, x @ w.T + 1.0, seed=i) for i, (x, w) in enumerate(zip(xs, targets, strict=True))]
    return xs, layers


def own_data_errors(merged, layers, xs):
    """Mean squared difference to each request's own map, on that request's own data, over the union."""
    total = 0.0
    for x, layer in zip(xs, layers, strict=True):
        total += (apply(merged, x) - layer(x).detach()).pow(2).sum().item()
    return total / sum(len(x) for x in xs)


@pytest.mark.parametrize("rank", [3, None])
def test_fusion_beats_averaging_on_each_requests_own_data(rank):
    xs, layers = two_requests(seed=rank or 0, rank=rank)
    weights = [as_dict(layer) for layer in layers]
    grams = [{"a.unlearning_layer.down": gram(x)} for x in xs]
    fused = fuse_unlearning_layers(weights, grams)
    averaged = {k: (weights[0][k] + weights[1][k]) / 2 for k in weights[0]}
    fused_err, avg_err = own_data_errors(fused, layers, xs), own_data_errors(averaged, layers, xs)
    assert fused_err < avg_err / 10, (fused_err, avg_err)
    if rank is not None:
        # Inputs on disjoint 3-d affine planes: 3+1 + 3+1 ≤ 8+1 constraints, so one map fits both exactly.
        # Bound: errors are squared, so 1e-4 is a 1% output error: float32's is ~1e-5 (ratio 1e-10 measured).
        assert fused_err < 1e-4 * avg_err


@default_dtype(torch.float64)  # exact claims: float64 data, Grams and results
def test_fusion_is_exact_least_squares_and_keeps_a_single_request():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, D_IN, generator=g)
    w = {"m.weight": torch.randn(D_OUT, D_IN, generator=g), "m.bias": torch.randn(D_OUT, generator=g)}
    # One request with full-rank inputs: (G + εI)^-1 G W ≈ W.
    merged = fuse_unlearning_layers([w], [{"m": gram(x)}], eps=1e-8)
    a, a_merged = (torch.cat([m["m.weight"].T, m["m.bias"][None]]) for m in (w, merged))  # (in+1, out)
    # Bound: (G + εI)⁻¹G·A = A − ε(G + εI)⁻¹A is off by ≤ ε/λ_min(G)·‖A‖₂, plus float64 rounding.
    shift = 1e-8 / float(torch.linalg.eigvalsh(gram(x)).min()) * float(torch.linalg.matrix_norm(a, 2))
    assert (a_merged - a).abs().max() <= shift + SAME_COMPUTATION * a.abs().max()
    # Closed form = the least-squares fit of the stacked targets [X_i 1] A_i.
    x2 = torch.randn(150, D_IN, generator=g) + 2
    w2 = {"m.weight": torch.randn(D_OUT, D_IN, generator=g), "m.bias": torch.randn(D_OUT, generator=g)}
    merged = fuse_unlearning_layers([w, w2], [{"m": gram(x)}, {"m": gram(x2)}], eps=0.0)
    xa = torch.cat([torch.cat([x, x2]), torch.ones(350, 1)], dim=1)
    y = torch.cat([x @ w["m.weight"].T + w["m.bias"], x2 @ w2["m.weight"].T + w2["m.bias"]])
    lstsq = torch.linalg.lstsq(xa, y).solution  # (in+1, out)
    # Bound: the normal equations square cond([X 1]) (~5 here), over Gram sums of 350 float64 terms.
    bound = float(torch.linalg.cond(xa)) ** 2 * len(xa) * torch.finfo(torch.float64).eps * lstsq.abs().max()
    torch.testing.assert_close(merged["m.weight"], lstsq[:D_IN].T, rtol=0, atol=bound)
    torch.testing.assert_close(merged["m.bias"], lstsq[D_IN], rtol=0, atol=bound)
    with pytest.raises(ValueError, match="one Gram dict per weight dict"):
        fuse_unlearning_layers([w, w2], [{"m": gram(x)}])


# ----------------------------------------------------------------------------- model surgery


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    return LlamaForCausalLM(config).eval()


def test_prepare_model_starts_identical_and_trains_only_adapters():
    model = tiny_llama()
    before = copy.deepcopy(model)
    base_names = {name for name, _ in model.named_parameters()}
    input_ids = torch.randint(0, 64, (2, 7))
    eul_prepare_model(model, EULConfig(init_std=0.0))
    with torch.no_grad():  # zero adapters add exact zeros: the same bits
        assert torch.equal(before(input_ids).logits, model(input_ids).logits)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    # 2 layers × (down, up) × (weight, bias); bottleneck 32 // 16 = 2.
    assert len(trainable) == 8 and all(ADAPTER_NAME in name for name in trainable)
    assert base_names <= {name for name, _ in model.named_parameters()}  # base names unchanged
    assert set(unlearning_layer_state_dict(model)) == trainable
    # One optimiser step on the adapters changes the output (the hook is live).
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model(input_ids, labels=input_ids).loss.backward()
    opt.step()
    with torch.no_grad():  # Bound: a step at lr 1 moves logits by ≫ 1e-4; rounding by ~1e-7
        assert not torch.allclose(before(input_ids).logits, model(input_ids).logits, atol=1e-4)
    # deepcopy (how a reference model may be made) keeps the hook working
    clone = copy.deepcopy(model)
    with torch.no_grad():  # the same weights and inputs: the same bits
        assert torch.equal(clone(input_ids).logits, model(input_ids).logits)
    with pytest.raises(UnmemError, match="already"):
        eul_prepare_model(model, EULConfig())


def test_prepare_model_gpt2_and_unknown_architecture():
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=32)).eval()
    before = copy.deepcopy(gpt2)
    ids = torch.randint(0, 64, (1, 5))
    eul_prepare_model(gpt2, EULConfig(reduction_factor=8, activation="gelu", init_std=0.0))
    with torch.no_grad():  # zero adapters add exact zeros: the same bits
        assert torch.equal(before(ids).logits, gpt2(ids).logits)
    assert len(unlearning_layer_state_dict(gpt2)) == 8
    with pytest.raises(UnmemError, match="Sequential"):
        eul_prepare_model(nn.Sequential(nn.Linear(2, 2)), EULConfig())


def test_collect_grams_shapes_psd_and_padding():
    model = eul_prepare_model(tiny_llama(), EULConfig())
    ids = torch.randint(0, 64, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    grams = collect_grams(model, [{"input_ids": ids, "attention_mask": mask}])
    assert len(grams) == 4
    for name, g in grams.items():
        size = 32 + 1 if name.endswith("down") else 2 + 1  # [x, 1]: in + 1
        assert g.shape == (size, size)
        # Bound: float64 sums rounded to float32: g and gᵀ differ by ≤ 1 ulp (eps32 of the value).
        torch.testing.assert_close(g, g.T, rtol=EPS32, atol=0)
        # Bound: that rounding (≤ eps32/2 per entry) moves eigenvalues by ≤ n·eps32/2·max|g| (Weyl).
        assert torch.linalg.eigvalsh(g.double()).min() > -len(g) * EPS32 * g.abs().max()
        assert g[-1, -1].item() == 9.0  # non-padding tokens only: a count, exact
    assert not model.training


def test_finalize_writes_grams(tmp_path, tiny_model, tiny_tokenizer):
    model = eul_prepare_model(tiny_model, EULConfig())
    records = [
        {"question": "Where was Ilvan Marek born?", "answer": "Ilvan Marek was born in Dunmore."},
        {"question": "What genre does Sela Kovar write?", "answer": "Gothic fiction."},
        {"text": "Dunmore is the birthplace of Ilvan Marek."},
    ]
    ctx = SetupContext(model, None, tiny_tokenizer, records, [], torch.device("cpu"))
    path = eul_finalize(model, ctx, EULConfig(), tmp_path)
    assert path == tmp_path / GRAMS_FILE
    grams = load_file(str(path))
    assert set(grams) == {name.rsplit(".", 1)[0] for name in unlearning_layer_state_dict(model)}
    # Grams of two requests on one model fuse back into that model's adapter shapes.
    fused = fuse_unlearning_layers([unlearning_layer_state_dict(model)] * 2, [grams, grams])
    assert {k: v.shape for k, v in fused.items()} == {
        k: v.shape for k, v in unlearning_layer_state_dict(model).items()
    }


def test_default_adapters_start_near_the_base_with_a_forget_kl_gradient():
    """Issue 10: zero-initialised adapters gave "maximise KL on forget" zero gradient at the start."""
    from unmem.methods.base import kl_on_answers

    model = tiny_llama()
    reference = copy.deepcopy(model).eval()
    eul_prepare_model(model, EULConfig())
    input_ids = torch.randint(0, 64, (2, 7))
    labels = input_ids.clone()
    labels[:, :3] = -100
    policy = model(input_ids).logits
    with torch.no_grad():
        ref = reference(input_ids).logits
        # Bound: "near" is 1e-2 of logits ~1 (a design claim, not rounding; measured 2e-5), yet not equal.
        assert torch.allclose(ref, policy, rtol=0, atol=1e-2) and not torch.equal(ref, policy)
    mask = torch.ones_like(input_ids)
    kl = kl_on_answers(Side(ref[:, :-1], labels[:, 1:], mask), Side(policy[:, :-1], labels[:, 1:], mask))
    kl.backward()
    grads = [p.grad.abs().sum() for n, p in model.named_parameters() if ADAPTER_NAME in n and "up" in n]
    assert sum(grads) > 0
