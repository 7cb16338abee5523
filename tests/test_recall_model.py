"""The recall model's gather/scatter fast path against the plain dense formula of docs/science.md §R.3."""

import itertools
import math

import pytest
import torch
from torch.nn import functional as nnf

from functools import partial

from icrl.recall import (LinearAttention, Origin, RecallTask, RecallTransformer, ReLUAttention, Reparam, ReparamW,
                         SoftmaxAttention, entropy, sample_recall)
from icrl.optim import NormalizedGD
from icrl.recall.metrics import ExpectedCrossEntropy
from icrl.streams import generator

ATTENTIONS = {"linear": LinearAttention, "relu": ReLUAttention, "softmax": SoftmaxAttention}
# every parameterization, the value-scaled Reparam (and Reparam-W) of the later paper version included
PARAMETERIZATIONS = {"origin": Origin, "reparam": Reparam, "reparam_w": ReparamW,
                     "reparam_scaled": partial(Reparam, value_scale=True),
                     "reparam_w_scaled": partial(ReparamW, value_scale=True)}
VALUE_SCALED = partial(Reparam, value_scale=True)


def dense_forward(model: RecallTransformer, tokens: torch.Tensor):
    """docs/science.md §R.3 as written: build x_h = E(z_h) + Ẽ(z_{h-1}) densely and apply the equations."""
    N, d = model.task.vocab_size, model.U.shape[1]
    E = torch.eye(d)
    X = E[tokens].clone()  # (B, T, d)
    X[:, 1:] += E[N + tokens[:, :-1]]
    W, V, F, U = model.param.W(), model.param.V(), model.param.F(), model.U
    x_last = X[:, -1]  # (B, d)
    s = torch.einsum("bi,ij,btj->bt", x_last, W, X)
    sigma = model.attention(s)
    a = torch.einsum("bt,btd->bd", sigma, X)
    xi_A = (U @ V @ a.T).T
    xi_F = torch.zeros_like(xi_A) if model.kappa is None else (U @ F @ (x_last + model.kappa * a).T).T
    return xi_A + xi_F, xi_A, xi_F


# every combination; the noisy Reparam without feed-forward is refused by design (the "inexpressible feed-forward" case of
# tests/test_reliability_recall.py); the random start (init_std) lets zero-init-frozen Origin combinations build
COMBOS = [c for c in itertools.product(ATTENTIONS, PARAMETERIZATIONS, ["none", "F", "FA"], [False, True], [0.0, 0.3])
          if not (c[4] > 0 and c[1] != "origin" and c[2] == "none") and not (c[1].endswith("scaled") and c[3])]


def build(attention: str, param: str, ff: str, task: RecallTask, d_model: int, **kwargs) -> RecallTransformer:
    make = PARAMETERIZATIONS[param]
    if param == "origin":
        make = partial(Origin, init_std=0.1)
    return RecallTransformer(task, d_model, ATTENTIONS[attention](), make, ff, **kwargs)


@pytest.mark.parametrize("attention,param,ff,trainable_U,alpha", COMBOS)
def test_fast_path_equals_dense_formula(attention, param, ff, trainable_U, alpha):
    torch.manual_seed(0)
    task = RecallTask(vocab_size=11, n_triggers=2, n_outputs=3, context_length=9, alpha=alpha)
    model = build(attention, param, ff, task, 25, trainable_U=trainable_U)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn_like(p))
    tokens = sample_recall(task, 6, generator(1))["tokens"]
    out = model(tokens)
    ref = dense_forward(model, tokens)
    for fast, slow in zip(out[:3], ref):
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    # and the gradients of a loss through both paths
    target = torch.randint(0, task.vocab_size, (6,))
    g_fast = torch.autograd.grad(nnf.cross_entropy(out.logits, target), list(model.parameters()))
    g_slow = torch.autograd.grad(nnf.cross_entropy(ref[0], target), list(model.parameters()))
    for a, b in zip(g_fast, g_slow):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_reparam_matrices_follow_spec():
    task = RecallTask(vocab_size=12, n_triggers=3, n_outputs=2, context_length=10)
    model = RecallTransformer(task, 24, parameterization=Reparam)
    with torch.no_grad():
        model.param.lam.copy_(torch.tensor([1.0, 2.0, 3.0]))
    E = torch.eye(24)
    expected = sum(lam * torch.outer(E[k], E[12 + k]) for k, lam in enumerate([1.0, 2.0, 3.0]))
    torch.testing.assert_close(model.param.W(), expected)
    torch.testing.assert_close(model.param.V(), torch.eye(24))
    assert model.param.F().abs().sum() == 0

    noisy = RecallTask(vocab_size=12, n_triggers=3, n_outputs=2, context_length=10, alpha=0.2)
    model = RecallTransformer(noisy, 24, parameterization=Reparam)
    with torch.no_grad():
        model.param.lam.fill_(2.5)
    tau, gamma = 11, math.log(0.2 / 0.8)
    torch.testing.assert_close(model.param.W(), 2.5 * torch.outer(E[0], E[12] - E[tau]))
    torch.testing.assert_close(model.param.F(), torch.outer(E[tau], gamma * E[0] + E[12]))


@pytest.mark.parametrize("lam", [0.0, 1.5, 6.0])
def test_noiseless_reparam_linear_closed_form(lam):
    task = RecallTask()
    model = RecallTransformer(task, parameterization=Reparam, attention=LinearAttention())
    with torch.no_grad():
        model.param.lam.fill_(lam)
    batch = sample_recall(task, 256, generator(2))
    loss = nnf.cross_entropy(model(batch["tokens"]).logits, batch["target"])
    assert loss.item() == pytest.approx(math.log(1 + 59 * math.exp(-lam)), rel=1e-5)


@pytest.mark.parametrize("alpha,Lam", [(0.5, 0.0), (0.2, 2.0), (0.8, 7.0)])
def test_noisy_reparam_linear_closed_form(alpha, Lam):
    task = RecallTask(alpha=alpha)
    model = RecallTransformer(task, parameterization=Reparam, attention=LinearAttention(), feedforward="FA")
    with torch.no_grad():
        model.param.lam.fill_(Lam)
    batch = sample_recall(task, 4096, generator(3))
    per_sample = nnf.cross_entropy(model(batch["tokens"]).logits, batch["target"], reduction="none")
    # -log p(τ) = -log α + c and -log p(y) = -log(1-α) + c, c = ln(1 + (1-α)(N-2)e^{-Λ})
    c = math.log(1 + (1 - alpha) * 58 * math.exp(-Lam))
    is_tau = batch["target"] == task.noise_token
    expected = torch.where(is_tau, -math.log(alpha) + c, -math.log(1 - alpha) + c)
    torch.testing.assert_close(per_sample, expected.float(), atol=1e-5, rtol=1e-5)
    # its mean is the population loss H(α) + c up to the sampling noise of the τ frequency
    population = -alpha * math.log(alpha) - (1 - alpha) * math.log(1 - alpha) + c
    assert per_sample.mean().item() == pytest.approx(population, abs=4 * math.sqrt(alpha * (1 - alpha) / 4096) * abs(math.log(alpha / (1 - alpha))) + 1e-4)


def test_softmax_reparam_with_fixed_U_floors_at_ln_1_plus_N_minus_1_over_e():
    task = RecallTask()
    model = RecallTransformer(task, parameterization=Reparam, attention=SoftmaxAttention())
    with torch.no_grad():
        model.param.lam.fill_(40.0)
    batch = sample_recall(task, 128, generator(4))
    loss = nnf.cross_entropy(model(batch["tokens"]).logits, batch["target"])
    assert loss.item() == pytest.approx(math.log(1 + 59 / math.e), rel=1e-4)


def test_model_outputs_have_documented_shapes():
    task = RecallTask(vocab_size=20, n_triggers=2, n_outputs=3, context_length=12)
    out = RecallTransformer(task, 40, feedforward="FA")(sample_recall(task, 5, generator(0))["tokens"])
    assert out.logits.shape == out.logits_attn.shape == out.logits_ff.shape == (5, 20)
    assert out.attention.shape == (5, 12)


def test_value_scaled_reparam_matrices_follow_spec():
    noisy = RecallTask(vocab_size=12, n_triggers=3, n_outputs=2, context_length=10, alpha=0.2)
    model = RecallTransformer(noisy, 24, SoftmaxAttention(), VALUE_SCALED)
    assert model.param.scale().item() == 1.0  # starts as the plain Reparam
    with torch.no_grad():
        model.param.lam.fill_(2.5)
        model.param.log_s.fill_(math.log(3.0))
    E, tau, gamma = torch.eye(24), 11, math.log(0.2 / 0.8)
    torch.testing.assert_close(model.param.W(), 2.5 * torch.outer(E[0], E[12] - E[tau]))
    torch.testing.assert_close(model.param.V(), 3.0 * torch.eye(24))
    torch.testing.assert_close(model.param.F(), torch.outer(E[tau], gamma * E[0] + 3.0 * E[12]))  # F = E(τ)(γE(q) + sẼ(q))ᵀ


@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.5])
def test_value_scaled_softmax_reparam_reaches_the_bayes_risk_in_and_out_of_distribution(alpha):
    # the later version's softmax result: at λ = 10, s = 20 the exact expected loss is H(α) to 1e-5 on both sets
    task = RecallTask(alpha=alpha)
    model = RecallTransformer(task, attention=SoftmaxAttention(), parameterization=VALUE_SCALED, feedforward="FA")
    with torch.no_grad():
        model.param.lam.fill_(10.0)
        model.param.log_s.fill_(math.log(20.0))
    for ood in (False, True):
        batch = sample_recall(task, 512, generator(5), ood=ood)
        metric = ExpectedCrossEntropy(alpha, task.noise_token)
        metric.update(model(batch["tokens"]).logits, batch["output"])
        assert metric.compute().item() == pytest.approx(entropy(alpha), abs=1e-5), ood
    # and without the value scale (s = 1) the same λ stays far from it: the first version's floor
    with torch.no_grad():
        model.param.log_s.fill_(0.0)
    metric = ExpectedCrossEntropy(alpha, task.noise_token)
    metric.update(model(batch["tokens"]).logits, batch["output"])
    assert metric.compute().item() > entropy(alpha) + 1.0


@pytest.mark.parametrize("free_sign", [False, True])
def test_value_scale_must_stay_positive_at_long_contexts(free_sign):
    # docs/science.md §R.4: at T = 1024, α = 0.5 the free-sign scale is driven below 0 from the uniform start
    # (s ≈ −39, Λ ≈ −18 after 400 steps: OOD gap 3.2 nats), the positive s = e^σ reaches the Bayes risk
    task = RecallTask(context_length=1024, alpha=0.5)
    model = RecallTransformer(task, attention=SoftmaxAttention(), feedforward="FA",
                              parameterization=partial(Reparam, value_scale=True, free_sign=free_sign))
    opt = NormalizedGD(model.parameters(), lr=0.1)
    gen = generator(0)
    for _ in range(400):
        batch = sample_recall(task, 128, gen)
        opt.zero_grad()
        nnf.cross_entropy(model(batch["tokens"]).logits, batch["target"]).backward()
        opt.step()
    batch = sample_recall(task, 1024, generator(1), ood=True)
    with torch.no_grad():
        logits = model(batch["tokens"]).logits
    metric = ExpectedCrossEntropy(0.5, task.noise_token)
    metric.update(logits, batch["output"])
    gap, p_noise = metric.compute().item() - entropy(0.5), logits.softmax(-1)[:, task.noise_token].mean().item()
    if free_sign:
        assert model.param.scale().item() < 0 and model.param.lam.item() < 0 and gap > 1.0
    else:
        assert model.param.scale().item() > 1 and model.param.lam.item() > 5
        assert 0 <= gap < 1e-3 and abs(p_noise - 0.5) < 0.02
