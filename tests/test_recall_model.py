"""The recall model's gather/scatter paths against the plain dense formula of docs/science.md §R.3, and its closed forms."""

import itertools
import math
from functools import partial

import pytest
import torch
from torch.nn import functional as nnf
from torch.testing import assert_close

from conftest import ATTENTIONS, PARAMETERIZATIONS
from icrl.optim import NormalizedGD
from icrl.recall import (LinearAttention, Origin, RecallTask, RecallTransformer, Reparam, ReparamW, SoftmaxAttention,
                         entropy, sample_recall)
from icrl.recall.dense import dense_forward, dense_inputs
from icrl.recall.inputs import ContextInputs
from icrl.recall.model import stacked_logits
from icrl.recall.metrics import ExpectedCrossEntropy
from icrl.streams import generator

VALUE_SCALED = partial(Reparam, value_scale=True)
# every combination, trainable U included; the noisy Reparam(-W) without feed-forward is refused by design
# (tests/test_recall_combinations.py)
COMBOS = [c for c in itertools.product(ATTENTIONS, PARAMETERIZATIONS, ["none", "F", "FA"], [False, True], [0.0, 0.3])
          if not (c[4] > 0 and c[1] != "Origin" and c[2] == "none") and not ("value_scale" in c[1] and c[3])]


@pytest.mark.parametrize("attention,param,ff,trainable_U,alpha", COMBOS)
def test_both_fast_paths_equal_the_dense_formula(attention, param, ff, trainable_U, alpha):
    torch.manual_seed(0)
    task = RecallTask(vocab_size=11, n_triggers=2, n_outputs=3, context_length=9, alpha=alpha)
    make = partial(Origin, init_std=0.1) if param == "Origin" else PARAMETERIZATIONS[param]  # zero Origin may be refused
    model = RecallTransformer(task, 25, ATTENTIONS[attention](), make, ff, trainable_U=trainable_U)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn_like(p))
    tokens = sample_recall(task, 6, generator(1))["tokens"]
    out, logits_only, ref = model(tokens), model(tokens, parts=False), dense_forward(model, tokens)
    assert out.logits.shape == out.logits_attn.shape == out.logits_ff.shape == (6, 11) and out.attention.shape == (6, 9)
    assert logits_only.logits_attn is None and logits_only.logits_ff is None
    for fast, dense in zip([*out, logits_only.logits, logits_only.attention], [*ref, ref.logits, ref.attention]):
        assert_close(fast, dense, atol=1e-5, rtol=1e-5)
    # gradients of a loss through all four outputs (parts=True), and of the training loss (parts=False)
    probes = [torch.randn_like(t) for t in ref]
    target = torch.randint(0, task.vocab_size, (6,))
    params = list(model.parameters())
    for fast, dense in [(sum((o * w).sum() for o, w in zip(out, probes)), sum((o * w).sum() for o, w in zip(ref, probes))),
                        (nnf.cross_entropy(logits_only.logits, target), nnf.cross_entropy(ref.logits, target))]:
        for g_fast, g_dense in zip(torch.autograd.grad(fast, params), torch.autograd.grad(dense, params, retain_graph=True)):
            assert_close(g_fast, g_dense, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention,param,ff,trainable_U", [c[:4] for c in COMBOS if c[4] == 0])
def test_stacked_logits_equal_each_models_own(attention, param, ff, trainable_U):
    """An ensemble's one pass (``stacked_logits``) against each member's forward: members of one architecture with
    their own weights and α (a noisy and a noiseless Reparam even hold parameters of different shapes)."""
    torch.manual_seed(0)
    alphas = (0.0, 0.0, 0.0) if param != "Origin" and ff == "none" else (0.0, 0.3, 0.6)
    make = partial(Origin, init_std=0.1) if param == "Origin" else PARAMETERIZATIONS[param]
    models = [RecallTransformer(RecallTask(vocab_size=11, n_triggers=2, n_outputs=3, context_length=9, alpha=a), 25,
                                ATTENTIONS[attention](), make, ff, trainable_U=trainable_U) for a in alphas]
    with torch.no_grad():
        for p in (p for m in models for p in m.parameters()):
            p.copy_(0.5 * torch.randn_like(p))
    tokens = torch.stack([sample_recall(m.task, 6, generator(k))["tokens"] for k, m in enumerate(models)])  # (3, 6, 9)
    stacked = stacked_logits(models, tokens)
    own = torch.stack([m(t, parts=False).logits for m, t in zip(models, tokens)])
    assert stacked.shape == (3, 6, 11)
    assert_close(stacked, own, atol=1e-5, rtol=1e-5)  # float32 at weights ~0.5: sums in another order
    probe, params = torch.randn_like(own), [p for m in models for p in m.parameters()]
    for g_stacked, g_own in zip(torch.autograd.grad((stacked * probe).sum(), params),
                                torch.autograd.grad((own * probe).sum(), params)):
        assert_close(g_stacked, g_own, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("value_scale", [False, True])
def test_reparam_matrices_follow_spec(value_scale):
    E, s, tau, gamma = torch.eye(24), 3.0 if value_scale else 1.0, 11, math.log(0.2 / 0.8)
    for alpha, lam in [(0.0, [1.0, 2.0, 3.0]), (0.2, [2.5])]:
        task = RecallTask(vocab_size=12, n_triggers=3, n_outputs=2, context_length=10, alpha=alpha)
        param = RecallTransformer(task, 24, parameterization=partial(Reparam, value_scale=value_scale)).param
        # the state_dict names (and parameter order) checkpoints were saved with
        assert [n for n, _ in param.named_parameters()] == (["log_s", "lam"] if value_scale else ["lam"])
        with torch.no_grad():
            param.lam.copy_(torch.tensor(lam))
            if value_scale:
                assert param.scale().item() == 1.0  # starts as the plain Reparam
                param.log_s.fill_(math.log(s))
        if alpha:
            assert_close(param.W(), 2.5 * torch.outer(E[0], E[12] - E[tau]))
            assert_close(param.F(), torch.outer(E[tau], gamma * E[0] + s * E[12]))  # F = E(τ)(γE(q) + sẼ(q))ᵀ
        else:
            assert_close(param.W(), sum(lam_k * torch.outer(E[k], E[12 + k]) for k, lam_k in enumerate(lam)))
            assert param.F().abs().sum() == 0
        assert_close(param.V(), s * torch.eye(24))
        # ReparamW: the same V and F around its free W
        free = ReparamW(task, 24, value_scale=value_scale, init_std=0.1)
        assert [n for n, _ in free.named_parameters()] == (["log_s", "W_"] if value_scale else ["W_"])
        with torch.no_grad():
            if value_scale:
                free.log_s.fill_(math.log(s))
        assert_close(free.V(), param.V())
        assert_close(free.F(), param.F())
    free_sign = ReparamW(task, 24, value_scale=True, free_sign=True)
    assert [n for n, _ in free_sign.named_parameters()] == ["s", "W_"] and free_sign.scale() is free_sign.s


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
    assert_close(per_sample, expected.float(), atol=1e-5, rtol=1e-5)
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
        nnf.cross_entropy(model(batch["tokens"], parts=False).logits, batch["target"]).backward()  # as training does
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


def test_deterministic_scatter_path_gives_the_same_numbers_on_a_cpu():
    gen = torch.Generator().manual_seed(0)
    tokens, w = torch.randint(60, (64, 256), generator=gen), torch.randn(64, 256, generator=gen, requires_grad=True)
    X = ContextInputs(tokens, 60, 128)
    fast = X.rmatvec(w)
    (grad_fast,) = torch.autograd.grad(fast.square().sum(), w)
    torch.use_deterministic_algorithms(True)
    try:
        exact = X.rmatvec(w)
        (grad_exact,) = torch.autograd.grad(exact.square().sum(), w)
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.equal(fast, exact) and torch.equal(grad_fast, grad_exact)
    assert_close(exact, torch.einsum("bt,btd->bd", w, dense_inputs(tokens, 60, 128)))
    assert math.isfinite(exact.sum().item())
