"""Every method's loss on hand-made tensors: a value worked out by hand, the direction of the
gradient, and a registry matrix over all methods. No model is run here.

Float bounds: the tensors are float64 (the autouse fixture below), so a loss meets its hand-worked
value to ~1e-15 and pytest.approx's default (relative 1e-6) is never reached by rounding, only by
a wrong term (≥ 1e-3 here). A bound other than the default says why where it is used.
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch

from float_bounds import EPS32, default_dtype
from unmem.errors import UnmemError
from unmem.methods.base import IGNORE_INDEX, SENSITIVE_MARKER, LossInputs, Side
from unmem.methods.chen import ChenConfig, chen_loss, cluster_mean
from unmem.methods.di import DIConfig, di_loss
from unmem.methods.eul import EULConfig, eul_loss
from unmem.methods.flat import DIVERGENCES, FLATConfig, flat_loss
from unmem.methods.ga import GAConfig, ga_loss
from unmem.methods.grad_diff import GradDiffConfig, grad_diff_loss
from unmem.methods.idk_dpo import IdkDPOConfig, idk_dpo_loss
from unmem.methods.idk_nll import IdkNLLConfig, idk_nll_loss
from unmem.methods.kl import KLConfig, kl_loss
from unmem.methods.npo import NPOConfig, npo_loss
from unmem.methods.registry import SetupContext, all_methods
from unmem.methods.rmu import RMUConfig, random_direction, rmu_loss, rmu_setup
from unmem.methods.simnpo import SimNPOConfig, simnpo_loss
from unmem.methods.wga import WGAConfig, wga_loss

pytestmark = pytest.mark.numerics  # CI runs these again on other kernels (issue 21)
LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)


@pytest.fixture(autouse=True)
def float64_tensors():
    with default_dtype(torch.float64):
        yield


def side(logit_rows, labels, *, hidden=None, attention_mask=None, token_weights=None, grad=True) -> Side:
    """A batch-of-one Side: ``logit_rows`` (time-1, vocab) predict ``labels`` (time-1,)."""
    logits = torch.tensor([logit_rows], requires_grad=grad)
    labels_t = torch.tensor([labels])
    mask = (
        torch.ones(1, labels_t.shape[1] + 1, dtype=torch.long) if attention_mask is None else attention_mask
    )
    tw = None if token_weights is None else torch.tensor([token_weights])
    return Side(logits=logits, labels=labels_t, attention_mask=mask, hidden=hidden or {}, token_weights=tw)


def uniform(vocab: int = 4, labels=(0, 1), **kw) -> Side:
    """Zero logits: p(label) = 1/vocab at both positions."""
    return side([[0.0] * vocab for _ in labels], list(labels), **kw)


def three_quarters(**kw) -> Side:
    """Vocab 2, logits [ln3, 0], label 0 at both positions: p(label) = 3/4."""
    return side([[LN3, 0.0], [LN3, 0.0]], [0, 0], **kw)


def sgd_step(loss: torch.Tensor, *tensors: torch.Tensor, lr: float = 0.1) -> list[torch.Tensor]:
    """The tensors after one SGD step on ``loss`` (the step the optimiser would take)."""
    grads = torch.autograd.grad(loss, tensors, retain_graph=True)
    return [(t - lr * g).detach() for t, g in zip(tensors, grads, strict=True)]


def label_logp(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).sum()


def clone(s: Side, grad: bool = False) -> Side:
    """Same outputs, a separate leaf: the frozen reference at θ = ref."""
    return Side(
        logits=s.logits.detach().clone().requires_grad_(grad),
        labels=s.labels,
        attention_mask=s.attention_mask,
        hidden={k: v.detach().clone() for k, v in s.hidden.items()},
        token_weights=s.token_weights,
    )


# ----------------------------------------------------------------------------- baselines


def test_ga_is_negative_nll_and_pushes_the_label_down():
    forget = uniform(4)
    loss, logs = ga_loss(LossInputs(forget=forget), GAConfig())
    # Uniform over 4 tokens: NLL = ln 4 at both positions, GA = −ln 4.
    assert loss.item() == pytest.approx(-LN4)
    assert logs["forget_nll"] == pytest.approx(LN4)
    (after,) = sgd_step(loss, forget.logits)
    assert label_logp(after, forget.labels) < label_logp(forget.logits.detach(), forget.labels)


def test_grad_diff_value_and_directions():
    forget = uniform(4)
    # Retain logits [ln3, 0, 0, 0], label 0: p = 3/(3+3) = 1/2, NLL_r = ln 2.
    retain = side([[LN3, 0, 0, 0], [LN3, 0, 0, 0]], [0, 0])
    loss, logs = grad_diff_loss(LossInputs(forget=forget, retain=retain), GradDiffConfig())
    # −γ·ln4 + α·ln2 = −ln 2 with γ = α = 1.
    assert loss.item() == pytest.approx(-LN2)
    assert logs["retain_nll"] == pytest.approx(LN2)
    f_after, r_after = sgd_step(loss, forget.logits, retain.logits)
    assert label_logp(f_after, forget.labels) < label_logp(forget.logits.detach(), forget.labels)
    assert label_logp(r_after, retain.labels) > label_logp(retain.logits.detach(), retain.labels)


def test_grad_diff_kl_retain_is_zero_at_the_reference():
    retain = uniform(4)
    inputs = LossInputs(forget=uniform(4), retain=retain, ref_retain=clone(retain))
    loss, logs = grad_diff_loss(inputs, GradDiffConfig(retain_loss="kl"))
    assert loss.item() == pytest.approx(-LN4)  # −ln4 + KL(θ‖θ) = −ln 4
    assert logs["retain_kl"] == pytest.approx(0.0, abs=1e-15)  # Bound: KL of equal rows, float64 rounding


def test_kl_value():
    # Vocab 2. Forget uniform: NLL = ln 2. Retain: reference (1/2, 1/2), policy (3/4, 1/4):
    # KL(ref‖θ) = ½ln(½/¾) + ½ln(½/¼) = ½ln(4/3) per token. L = −ln 2 + ½ ln(4/3).
    retain, ref_retain = three_quarters(), uniform(2, labels=(0, 0), grad=False)
    loss, _ = kl_loss(LossInputs(forget=uniform(2), retain=retain, ref_retain=ref_retain), KLConfig())
    assert loss.item() == pytest.approx(-LN2 + 0.5 * math.log(4 / 3))
    # The KL term pulls the policy back toward the reference: p(label 0) falls from 3/4.
    (after,) = sgd_step(loss, retain.logits)
    assert label_logp(after, retain.labels) < label_logp(retain.logits.detach(), retain.labels)


def test_npo_at_reference_is_two_over_beta_ln2_and_pushes_down():
    forget = uniform(4)
    inputs = LossInputs(forget=forget, ref_forget=clone(forget))
    loss, logs = npo_loss(inputs, NPOConfig(alpha=0.0))
    # log-ratio 0: −(2/β)·log σ(0) = (2/β)·ln 2 = 20 ln 2 for β = 0.1.
    assert loss.item() == pytest.approx(20 * LN2)
    assert logs["log_ratio"] == pytest.approx(0.0)
    (after,) = sgd_step(loss, forget.logits)
    assert label_logp(after, forget.labels) < label_logp(forget.logits.detach(), forget.labels)
    # With the default retain NLL (α = 1) the retain term adds on top: 20 ln2 + ln4.
    loss, _ = npo_loss(LossInputs(forget=forget, ref_forget=clone(forget), retain=uniform(4)), NPOConfig())
    assert loss.item() == pytest.approx(20 * LN2 + LN4)


def test_simnpo_value_gamma_scales_the_forget_term():
    forget = uniform(4)
    # NLL_f = ln 4, δ = 0, β = 4.5: −(2/β) log σ(β ln4) = (2/β) ln(1 + 4^-4.5) = (2/4.5) ln(1 + 1/512).
    expected = (2 / 4.5) * math.log(1 + 1 / 512)
    loss, logs = simnpo_loss(LossInputs(forget=forget), SimNPOConfig(alpha=0.0))
    assert logs["simnpo"] == pytest.approx(expected)
    assert loss.item() == pytest.approx(0.125 * expected)  # γ = 0.125 weights the forget term
    (after,) = sgd_step(loss, forget.logits, lr=100.0)
    assert label_logp(after, forget.labels) < label_logp(forget.logits.detach(), forget.labels)
    # The retain term is weighted by α (1 by default): + ln 4.
    loss, _ = simnpo_loss(LossInputs(forget=forget, retain=uniform(4)), SimNPOConfig())
    assert loss.item() == pytest.approx(0.125 * expected + LN4)


def test_idk_dpo_at_reference_and_directions():
    forget, idk = uniform(4), uniform(4, labels=(2, 3))
    inputs = LossInputs(forget=forget, ref_forget=clone(forget), idk=idk, ref_idk=clone(idk))
    loss, _ = idk_dpo_loss(inputs, IdkDPOConfig(alpha=0.0))
    assert loss.item() == pytest.approx(20 * LN2)  # margin 0: (2/β)·ln 2
    f_after, i_after = sgd_step(loss, forget.logits, idk.logits)
    assert label_logp(f_after, forget.labels) < label_logp(forget.logits.detach(), forget.labels)
    assert label_logp(i_after, idk.labels) > label_logp(idk.logits.detach(), idk.labels)


def test_idk_nll_value_and_direction():
    idk = uniform(4, labels=(2, 3))
    loss, logs = idk_nll_loss(LossInputs(forget=uniform(4), idk=idk), IdkNLLConfig(alpha=0.0))
    assert loss.item() == pytest.approx(LN4)
    assert logs["idk_nll"] == pytest.approx(LN4)
    (after,) = sgd_step(loss, idk.logits)
    assert label_logp(after, idk.labels) > label_logp(idk.logits.detach(), idk.labels)


def test_wga_value_and_detached_weights():
    # Vocab 2. Position 1: zeros, p = 1/2, CE = ln2, weight 1/2. Position 2: [ln3, 0], p = 3/4,
    # CE = ln(4/3), weight 3/4. WGA = −(½·ln2 + ¾·ln(4/3)) / 2.
    forget = side([[0.0, 0.0], [LN3, 0.0]], [0, 0])
    loss, logs = wga_loss(LossInputs(forget=forget), WGAConfig(alpha=0.0))
    assert loss.item() == pytest.approx(-(0.5 * LN2 + 0.75 * math.log(4 / 3)) / 2)
    assert logs["mean_weight"] == pytest.approx((0.5 + 0.75) / 2)
    # Detached weight: ∂L/∂z_label at position 1 = −(1/2)·w·∂CE/∂z = −½·½·(−(1 − ½)) = 1/8.
    (grad,) = torch.autograd.grad(loss, forget.logits)
    assert grad[0, 0, 0].item() == pytest.approx(0.125)


def test_rmu_value_mask_and_direction():
    # Hidden size 2, u = (0.6, 0.8), c = 5: target (3, 4). Forget hidden 0 on the two real
    # tokens → MSE (9 + 16)/2 = 12.5; the padded third token holds junk and must not count.
    # Retain hidden = reference + (1, 1) → MSE 1. With α = 2: 12.5 + 2·1 = 14.5.
    mask = torch.tensor([[1, 1, 0]])
    h_forget = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [1e3, 1e3]]], requires_grad=True)
    h_ref = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]]])
    h_retain = (h_ref + torch.tensor([1.0, 1.0])).requires_grad_(True)
    forget = side([[0.0, 0.0], [0.0, 0.0]], [1, IGNORE_INDEX], hidden={3: h_forget}, attention_mask=mask)
    retain = side([[0.0, 0.0], [0.0, 0.0]], [1, IGNORE_INDEX], hidden={3: h_retain}, attention_mask=mask)
    ref_retain = clone(retain)
    ref_retain.hidden = {3: h_ref}
    state = {"u": torch.tensor([0.6, 0.8]), "layer": 3}
    inputs = LossInputs(forget=forget, retain=retain, ref_retain=ref_retain, state=state)
    loss, logs = rmu_loss(inputs, RMUConfig(steering_coeff=5.0, alpha=2.0))
    assert loss.item() == pytest.approx(14.5)
    assert logs["forget_mse"] == pytest.approx(12.5)
    # tokens="answer": only input position 1 (label at t=0) is the answer; its forget MSE is 12.5 too,
    # retain MSE still 1.
    loss_answer, _ = rmu_loss(inputs, RMUConfig(steering_coeff=5.0, alpha=2.0, tokens="answer"))
    assert loss_answer.item() == pytest.approx(14.5)
    (after,) = sgd_step(loss, h_forget)
    assert (after[0, :2] - torch.tensor([3.0, 4.0])).norm() < (
        h_forget[0, :2].detach() - torch.tensor([3.0, 4.0])
    ).norm()


def test_rmu_setup_draws_a_fixed_unit_vector():
    u1, u2 = random_direction(16, seed=3), random_direction(16, seed=3)
    assert torch.equal(u1, u2) and u1.norm().item() == pytest.approx(1.0)
    assert (u1 >= 0).all()  # WMDP's draw: uniform [0, 1) entries, normalised
    fake = torch.nn.Linear(1, 1)
    fake.config = SimpleNamespace(hidden_size=16, num_hidden_layers=6)
    ctx = SetupContext(fake, None, None, [], [], torch.device("cpu"))
    state = rmu_setup(ctx, RMUConfig(seed=3))
    assert state["layer"] == 3 and torch.equal(state["u"], u1)


# ----------------------------------------------------------------------------- DI


def test_di_closed_form_value_and_gradient():
    # Vocab 2, teacher zeros: p0 = 1/2. γ = ln 3 so e^-γ = 1/3:
    # q(x) = p0·e^-γ / (p0·e^-γ + 1 − p0) = (1/6) / (1/6 + 1/2) = 1/4.
    # Student p = (3/4, 1/4) on the label: CE = −(¼·ln¾ + ¾·ln¼) = −¼ln¾ + ¾ln4.
    forget, teacher = three_quarters(), uniform(2, labels=(0, 0), grad=False)
    loss, logs = di_loss(LossInputs(forget=forget, ref_forget=teacher), DIConfig(gamma=LN3))
    assert loss.item() == pytest.approx(-0.25 * math.log(0.75) + 0.75 * LN4)
    assert logs["target_label_prob"] == pytest.approx(0.25)
    # At student = teacher the gradient on the label logit is (p0 − q)/N: the closed form.
    torch.manual_seed(0)
    z = torch.randn(2, 5)
    student = side(z.tolist(), [1, 3])
    loss, _ = di_loss(LossInputs(forget=student, ref_forget=clone(student)), DIConfig(gamma=3.0))
    (grad,) = torch.autograd.grad(loss, student.logits, retain_graph=True)
    p0 = torch.softmax(z, -1)[[0, 1], [1, 3]]
    q = p0 * math.exp(-3) / (p0 * math.exp(-3) + 1 - p0)
    # Bound: float64 softmax and division (~1e-16); a wrong q or N moves it by ≥ 1e-2.
    torch.testing.assert_close(grad[0, [0, 1], [1, 3]], (p0 - q) / 2, rtol=1e-12, atol=0)
    (after,) = sgd_step(loss, student.logits)
    assert label_logp(after, student.labels) < label_logp(student.logits.detach(), student.labels)


def test_di_never_reads_ignored_positions():
    # Position 1 is labelled -100 and holds extreme logits: no error, no contribution, no gradient.
    junk = [1e4, -1e4, 0.0]
    forget = side([junk, [0.0, 0.0, 0.0]], [IGNORE_INDEX, 2])
    teacher = side([[-1e4, 1e4, 0.0], [0.0, 0.0, 0.0]], [IGNORE_INDEX, 2], grad=False)
    loss, _ = di_loss(LossInputs(forget=forget, ref_forget=teacher), DIConfig())
    only = side([[0.0, 0.0, 0.0]], [2])
    expected, _ = di_loss(LossInputs(forget=only, ref_forget=clone(only)), DIConfig())
    assert loss.item() == pytest.approx(expected.item())
    (grad,) = torch.autograd.grad(loss, forget.logits)
    assert torch.count_nonzero(grad[0, 0]) == 0
    # All labels ignored: a finite zero, not an error.
    empty = side([[0.0, 0.0]], [IGNORE_INDEX])
    loss, _ = di_loss(LossInputs(forget=empty, ref_forget=clone(empty)), DIConfig())
    assert loss.item() == 0.0


def test_di_focus_weights():
    # Position 1 ordinary (CE_1), position 2 sensitive (marker): soft → (CE_1 + 10·CE_2)/11, hard → CE_2.
    def make():
        return side([[0.0, 0.0], [LN3, 0.0]], [0, 0], token_weights=[1.0, SENSITIVE_MARKER])

    teacher = uniform(2, labels=(0, 0), grad=False)
    ce = []
    for rows in ([[0.0, 0.0]], [[LN3, 0.0]]):
        one = side(rows, [0])
        ce.append(di_loss(LossInputs(forget=one, ref_forget=side([[0.0, 0.0]], [0])), DIConfig())[0].item())
    soft, _ = di_loss(LossInputs(forget=make(), ref_forget=teacher), DIConfig(focus="soft"))
    hard, _ = di_loss(LossInputs(forget=make(), ref_forget=teacher), DIConfig(focus="hard"))
    assert soft.item() == pytest.approx((ce[0] + 10 * ce[1]) / 11)
    assert hard.item() == pytest.approx(ce[1])
    with pytest.raises(ValueError, match="sensitive"):
        di_loss(LossInputs(forget=three_quarters(), ref_forget=teacher), DIConfig(focus="soft"))


def test_di_lower_sensitive_lowers_only_the_sensitive_labels():
    # Both positions: student p = (3/4, 1/4), label 0, teacher uniform, γ = ln 3. Position 1 is ordinary:
    # with lower="sensitive" its target stays the teacher's (1/2, 1/2), CE = −½ln¾ − ½ln¼; position 2
    # is sensitive, target (1/4, 3/4), CE = −¼ln¾ − ¾ln¼. lower="all" lowers both.
    def make():
        return side([[LN3, 0.0], [LN3, 0.0]], [0, 0], token_weights=[1.0, SENSITIVE_MARKER])

    teacher = uniform(2, labels=(0, 0), grad=False)
    kept = -0.5 * math.log(0.75) - 0.5 * math.log(0.25)
    lowered = -0.25 * math.log(0.75) - 0.75 * math.log(0.25)
    loss, logs = di_loss(
        LossInputs(forget=make(), ref_forget=teacher), DIConfig(gamma=LN3, lower="sensitive")
    )
    assert loss.item() == pytest.approx((kept + lowered) / 2)
    assert logs["target_label_prob"] == pytest.approx((0.5 + 0.25) / 2)
    loss, _ = di_loss(LossInputs(forget=make(), ref_forget=teacher), DIConfig(gamma=LN3))
    assert loss.item() == pytest.approx(lowered)
    with pytest.raises(ValueError, match="sensitive"):
        di_loss(LossInputs(forget=three_quarters(), ref_forget=teacher), DIConfig(lower="sensitive"))
    with pytest.raises(ValueError, match="lower"):
        DIConfig(lower="some")


# ----------------------------------------------------------------------------- EUL


def test_eul_value_alternating_sides_and_bounds():
    forget, retain = uniform(2), uniform(2)
    # θ = ref: both KLs 0; NLLs ln 2. Joint: α·0 + λ·ln2 − 0 − γ·ln2 = (1 − 0.2)·ln 2.
    both = LossInputs(forget=forget, ref_forget=clone(forget), retain=retain, ref_retain=clone(retain))
    assert eul_loss(both, EULConfig())[0].item() == pytest.approx(0.8 * LN2)
    retain_only = LossInputs(forget=None, retain=retain, ref_retain=clone(retain))
    assert eul_loss(retain_only, EULConfig())[0].item() == pytest.approx(LN2)
    forget_only = LossInputs(forget=forget, ref_forget=clone(forget))
    loss, _ = eul_loss(forget_only, EULConfig())
    assert loss.item() == pytest.approx(-0.2 * LN2)
    (after,) = sgd_step(loss, forget.logits)
    assert label_logp(after, forget.labels) < label_logp(forget.logits.detach(), forget.labels)
    # Far past both bounds: −kl_bound − γ·nll_bound, and no gradient left to push further.
    gone = side([[-50.0, 50.0], [-50.0, 50.0]], [0, 0])
    ref = side([[50.0, -50.0], [50.0, -50.0]], [0, 0], grad=False)
    loss, logs = eul_loss(LossInputs(forget=gone, ref_forget=ref), EULConfig())
    assert logs["forget_nll"] > 10 and logs["forget_kl"] > 5
    assert loss.item() == pytest.approx(-5.0 - 0.2 * 10.0)
    (grad,) = torch.autograd.grad(loss, gone.logits)
    assert torch.count_nonzero(grad) == 0
    with pytest.raises(ValueError, match="neither"):
        eul_loss(LossInputs(forget=None), EULConfig())


# ----------------------------------------------------------------------------- Chen et al.


def test_chen_value_margin_and_pull():
    # θ = ref on forget: d = 0 → L_neg = 0. Pooled forget-answer hidden = (1, 1), μ = (0, 0):
    # per-unit squared distance 1. Refusal uniform over 2: NLL ln 2. Retain at ref: KL 0.
    # L = λ_pos·(1 + ln2) + λ_neg·0 + α·0 = 1 + ln 2.
    hidden = torch.tensor([[[5.0, -5.0], [1.0, 1.0], [1.0, 1.0]]], requires_grad=True)  # position 0 = prompt
    forget = side([[0.0, 0.0], [0.0, 0.0]], [0, 1], hidden={2: hidden})
    retain = uniform(2)
    inputs = LossInputs(
        forget=forget,
        ref_forget=clone(forget),
        retain=retain,
        ref_retain=clone(retain),
        idk=uniform(2),
        state={"mu": torch.zeros(2), "layer": 2},
    )
    loss, logs = chen_loss(inputs, ChenConfig())
    assert loss.item() == pytest.approx(1 + LN2)
    assert logs["pull_mse"] == pytest.approx(1.0)
    (after,) = sgd_step(loss, hidden)
    assert after[0, 1:].norm() < hidden[0, 1:].detach().norm()  # pulled toward μ
    assert torch.equal(after[0, 0], hidden[0, 0].detach())  # prompt position untouched
    # The push stops at the margin: far from the reference, L_neg = −m with no gradient.
    far = side([[-20.0, 20.0], [20.0, -20.0]], [0, 1], hidden={2: hidden.detach()})
    inputs = LossInputs(
        forget=far,
        ref_forget=side([[20.0, -20.0], [-20.0, 20.0]], [0, 1], grad=False),
        idk=uniform(2),
        state={"mu": torch.zeros(2), "layer": 2},
    )
    loss, logs = chen_loss(inputs, ChenConfig(alpha=0.0, lambda_pos=0.0))
    assert logs["forget_kl"] > 1.0 and loss.item() == pytest.approx(-1.0)
    (grad,) = torch.autograd.grad(loss, far.logits)
    assert torch.count_nonzero(grad) == 0


def test_chen_cluster_mean():
    points = torch.tensor([[0.0, 0.0], [0.2, 0.0], [0.0, 0.2], [10.0, 10.0]])
    # Bound: cluster_mean averages in float32 (≤ 4 eps32 for 4 points); a wrong cluster is ≥ 0.1 off.
    assert torch.allclose(cluster_mean(points, 1), points.mean(0).float(), rtol=4 * EPS32, atol=0)
    # k = 2: the largest cluster is the three points near the origin.
    assert torch.allclose(cluster_mean(points, 2), points[:3].mean(0).float(), rtol=4 * EPS32, atol=0)
    with pytest.raises(ValueError, match="clusters=5"):
        cluster_mean(points, 5)


# ----------------------------------------------------------------------------- FLAT

P_F, P_E = 0.75, 0.5  # forget answer tokens at p = 3/4, template refusal tokens at p = 1/2
FLAT_EXPECTED = {
    # L = −g(P_e) + f*(g(P_f)) with the (g, f*∘g) pairs of flat.py
    "kl": -P_E + math.exp(P_F - 1),
    "pearson": -P_E + P_F**2 / 4 + P_F,
    "js": -(LN2 - math.log(1 + math.exp(-P_E))) + P_F + math.log(1 + math.exp(-P_F)) - LN2,
    "tv": -0.5 * math.tanh(P_E) + 0.5 * math.tanh(P_F),
    "reverse_kl": math.exp(-P_E) + P_F - 1,
    "hellinger": -(1 - math.exp(-P_E)) + math.exp(P_F) - 1,
}


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_flat_values_and_directions(divergence):
    forget, idk = three_quarters(), uniform(2, labels=(0, 1))
    loss, logs = flat_loss(LossInputs(forget=forget, idk=idk), FLATConfig(divergence=divergence))
    assert logs["forget_prob"] == pytest.approx(P_F) and logs["template_prob"] == pytest.approx(P_E)
    assert loss.item() == pytest.approx(FLAT_EXPECTED[divergence])
    f_after, i_after = sgd_step(loss, forget.logits, idk.logits)
    assert label_logp(f_after, forget.labels) < label_logp(forget.logits.detach(), forget.labels)
    assert label_logp(i_after, idk.labels) > label_logp(idk.logits.detach(), idk.labels)


def test_flat_literal_table_keeps_the_documented_sign_problem():
    # METHODS.md's reverse-KL row: L = e^{P_e} − 1 − P_f. Minimising it raises P_f: why flat.py departs.
    forget, idk = three_quarters(), uniform(2, labels=(0, 1))
    cfg = FLATConfig(divergence="reverse_kl", literal_table=True)
    loss, _ = flat_loss(LossInputs(forget=forget, idk=idk), cfg)
    assert loss.item() == pytest.approx(math.exp(P_E) - 1 - P_F)
    (f_after,) = sgd_step(loss, forget.logits)
    assert label_logp(f_after, forget.labels) > label_logp(forget.logits.detach(), forget.labels)
    cfg = FLATConfig(divergence="hellinger", literal_table=True)
    loss, _ = flat_loss(LossInputs(forget=three_quarters(), idk=uniform(2, labels=(0, 1))), cfg)
    assert loss.item() == pytest.approx(-(1 - math.exp(P_E)) + (1 - math.exp(P_F)) / math.exp(P_F))


def test_flat_unknown_divergence_lists_the_six():
    with pytest.raises(ValueError, match="kl, reverse_kl, pearson, hellinger, js, tv"):
        FLATConfig(divergence="wasserstein")


# ----------------------------------------------------------------------------- focus


def focused_forget() -> Side:
    """Position 0 ordinary at p = 1/2, position 1 in a sensitive span at p = 3/4."""
    return side([[0.0, 0.0], [LN3, 0.0]], [0, 0], token_weights=[1.0, SENSITIVE_MARKER])


def test_flat_eul_chen_focus_weight_the_sensitive_span():
    soft_mean = (0.5 + 10 * 0.75) / 11
    idk = uniform(2, labels=(0, 1))
    for focus, expected in (("none", 0.625), ("soft", soft_mean), ("hard", 0.75)):
        _, logs = flat_loss(LossInputs(forget=focused_forget(), idk=idk), FLATConfig(focus=focus))
        assert logs["forget_prob"] == pytest.approx(expected), focus
    # EUL forget-only at θ = ref (KL 0): L = −γ·NLL, the NLL averaged with the focus weights.
    for focus, nll in (("none", (LN2 + math.log(4 / 3)) / 2), ("hard", math.log(4 / 3))):
        forget = focused_forget()
        loss, _ = eul_loss(LossInputs(forget=forget, ref_forget=clone(forget)), EULConfig(focus=focus))
        assert loss.item() == pytest.approx(-0.2 * nll), focus
    # Chen: the reference differs from the policy only at the ordinary position, so the hard
    # focus sees no distance to push along, and the unfocused push does.
    ref = side([[5.0, 0.0], [LN3, 0.0]], [0, 0], grad=False)
    state = {"mu": torch.zeros(2), "layer": 2}
    hidden = {2: torch.zeros(1, 3, 2)}
    for focus, moved in (("none", True), ("hard", False)):
        forget = side([[0.0, 0.0], [LN3, 0.0]], [0, 0], hidden=hidden, token_weights=[1.0, SENSITIVE_MARKER])
        inputs = LossInputs(forget=forget, ref_forget=ref, idk=uniform(2), state=state)
        _, logs = chen_loss(inputs, ChenConfig(alpha=0.0, focus=focus))
        assert (logs["forget_kl"] > 0.1) is moved, focus
    with pytest.raises(ValueError, match="sensitive"):
        flat_loss(LossInputs(forget=three_quarters(), idk=idk), FLATConfig(focus="soft"))
    with pytest.raises(ValueError, match="unknown focus"):
        EULConfig(focus="partial")


# ----------------------------------------------------------------------------- registry matrix

VOCAB, HIDDEN, N_LAYERS, BATCH, TIME = 11, 6, 4, 3, 7


def random_side(generator: torch.Generator, layers: list[int], *, grad: bool) -> Side:
    logits = torch.randn(BATCH, TIME - 1, VOCAB, generator=generator).requires_grad_(grad)
    labels = torch.randint(0, VOCAB, (BATCH, TIME - 1), generator=generator)
    labels[:, :2] = IGNORE_INDEX  # prompt
    labels[0, -1] = IGNORE_INDEX  # padding
    attention = torch.ones(BATCH, TIME, dtype=torch.long)
    attention[0, -1] = 0
    hidden = {
        layer: torch.randn(BATCH, TIME, HIDDEN, generator=generator).requires_grad_(grad) for layer in layers
    }
    weights = torch.ones(BATCH, TIME - 1)
    weights[:, 3] = SENSITIVE_MARKER
    return Side(logits, labels, attention, hidden, weights)


def method_state(name: str, spec, cfg):
    if spec.setup is None:
        return None
    if name == "chen":  # its setup runs a model; tested in test_chen_evaluator.py
        return {"mu": torch.zeros(HIDDEN), "layer": N_LAYERS}
    fake = torch.nn.Linear(1, 1)
    fake.config = SimpleNamespace(hidden_size=HIDDEN, num_hidden_layers=N_LAYERS)
    return spec.setup(SetupContext(fake, None, None, [], [], torch.device("cpu")), cfg)


METHODS = all_methods()


def test_every_method_file_is_registered():
    expected = {"ga", "grad_diff", "kl", "npo", "simnpo", "idk_dpo", "idk_nll", "rmu", "wga", "di", "eul"}
    assert expected | {"chen", "flat"} <= set(METHODS)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_registry_matrix(name):
    spec = METHODS[name]
    cfg = spec.make_config()
    needs = spec.needs(cfg)
    # The static flags (what `unmem methods` prints) describe the default config.
    assert needs == (spec.needs_ref, spec.needs_retain, spec.needs_idk)
    layers = spec.hidden_layers(cfg, N_LAYERS) if spec.hidden_layers else []
    assert all(0 <= layer <= N_LAYERS for layer in layers)
    gen = torch.Generator().manual_seed(0)
    forget = random_side(gen, layers, grad=True)
    inputs = LossInputs(forget=forget, state=method_state(name, spec, cfg))
    if needs.ref:
        inputs.ref_forget = random_side(gen, layers, grad=False)
    if needs.retain:
        inputs.retain = random_side(gen, layers, grad=True)
        inputs.ref_retain = random_side(gen, layers, grad=False) if needs.ref else None
    if needs.idk:
        inputs.idk = random_side(gen, layers, grad=True)
        inputs.ref_idk = random_side(gen, layers, grad=False) if needs.ref else None
    loss, logs = spec.loss_fn(inputs, cfg)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert logs and all(isinstance(v, float) and math.isfinite(v) for v in logs.values())
    policy = [s for s in (forget, inputs.retain, inputs.idk) if s is not None]
    leaves = [t for s in policy for t in (s.logits, *s.hidden.values())]
    loss.backward()
    assert any(t.grad is not None and t.grad.abs().sum() > 0 for t in leaves)
    assert spec.description and "\n" not in spec.description


@pytest.mark.parametrize("name", sorted(METHODS))
def test_configs_reject_bad_values_naming_them(name):
    spec = METHODS[name]
    for field in dataclasses.fields(spec.config_cls):
        bad = (
            float("nan")
            if isinstance(field.default, int | float) and not isinstance(field.default, bool)
            else "bogus"
        )
        with pytest.raises(UnmemError, match=f"{field.name}.*{bad}|{bad}.*{field.name}"):
            spec.make_config({field.name: bad})


@pytest.mark.parametrize(
    ("name", "overrides", "expected"),
    [
        ("grad_diff", {"retain_loss": "kl"}, (True, True, False)),
        ("grad_diff", {"alpha": 0.0}, (False, False, False)),
        ("simnpo", {"retain_loss": "kl"}, (True, True, False)),
        ("npo", {"alpha": 0.0}, (True, False, False)),
        ("di", {"alpha": 1.0}, (True, True, False)),
        ("rmu", {"alpha": 0.0}, (False, False, False)),
        ("chen", {"alpha": 0.0}, (True, False, True)),
    ],
)
def test_needs_follow_the_config(name, overrides, expected):
    spec = METHODS[name]
    assert tuple(spec.needs(spec.make_config(overrides))) == expected
