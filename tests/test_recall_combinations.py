"""Every attention × parameterization × feed-forward mode trains from its start, or is refused before step 0."""

import itertools
from functools import partial

import pytest
import torch
from torch.nn import functional as nnf

from conftest import ATTENTIONS, PARAMETERIZATIONS, ROOT
from icrl.optim import NormalizedGD
from icrl.recall import (Attention, Origin, RecallTask, RecallTransformer, ReLUAttention, Reparam, ReparamW,
                         SoftmaxAttention, sample_recall)
from icrl.recall.parameterization import check_trainable
from icrl.streams import generator

COMBOS = list(itertools.product(ATTENTIONS, PARAMETERIZATIONS, ["none", "F", "FA"], [0.0, 0.5]))
# Derived in check_trainable's docstring: zero-init Origin with σ(0) = 0 (linear, ReLU) and no F on the attention path
FROZEN = {(a, "Origin", ff, alpha) for a in ("linear", "relu") for ff in ("none", "F") for alpha in (0.0, 0.5)}
# by design: the noisy Reparam's noise association lives in its fixed F
INEXPRESSIBLE = {c for c in COMBOS if c[3] > 0 and c[1] != "Origin" and c[2] == "none"}
TASK = dict(vocab_size=20, n_triggers=3, n_outputs=3, context_length=16)


def train(model: RecallTransformer, task: RecallTask, steps: int = 30, lr: float = 0.5) -> list[float]:
    opt = NormalizedGD(model.parameters(), lr=lr)
    losses = []
    for i in range(steps):
        batch = sample_recall(task, 32, generator(0, i))
        loss = nnf.cross_entropy(model(batch["tokens"]).logits, batch["target"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("attention,param,ff,alpha", COMBOS, ids=lambda v: str(v))
def test_every_combination_trains_or_is_refused(attention, param, ff, alpha):
    task = RecallTask(**TASK, alpha=alpha)
    torch.manual_seed(0)
    build = partial(RecallTransformer, task, 40, ATTENTIONS[attention](), PARAMETERIZATIONS[param], ff)
    if (attention, param, ff, alpha) in FROZEN | INEXPRESSIBLE:
        with pytest.raises(ValueError, match="stay 0 for ever|cannot express the noisy task"):
            build()
        return
    model = build()
    W0 = model.param.W().detach().clone()
    losses = train(model, task)
    assert sum(losses[-5:]) / 5 < losses[0] - 0.2  # the loss falls clearly
    assert not torch.equal(model.param.W(), W0)  # and attention's W moved, not only a feed-forward map


@pytest.mark.parametrize("attention,ff,alpha", [(a, ff, al) for a, _, ff, al in sorted(FROZEN)])
def test_refused_combinations_really_never_move_and_train_from_a_random_start(attention, ff, alpha):
    task = RecallTask(**TASK, alpha=alpha)
    torch.manual_seed(0)
    # the paper's zero start, built past the refusal: W and V get exactly zero gradient at every step
    model = RecallTransformer(task, 40, ATTENTIONS[attention](), partial(Origin, init_std=1.0), ff)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    losses = train(model, task, steps=10)
    assert model.param.W_.abs().sum() == 0 and model.param.V_.abs().sum() == 0
    if ff == "none":
        assert losses == pytest.approx([torch.log(torch.tensor(20.0)).item()] * 10)  # nothing moves: ln N throughout
    # the init option trains them
    model = RecallTransformer(task, 40, ATTENTIONS[attention](), partial(Origin, init_std=0.1), ff)
    W0 = model.param.W_.detach().clone()
    losses = train(model, task)
    assert sum(losses[-5:]) / 5 < losses[0] - 0.2 and not torch.equal(model.param.W_, W0)


class TorchReLU(Attention):
    def forward(self, scores):
        return torch.relu(scores)  # relu'(0) = 0


def test_an_attention_flat_at_zero_is_refused_for_every_zero_start_W():
    task = RecallTask(**TASK)
    for param in (Reparam, ReparamW, partial(Origin, init_std=0.0)):
        with pytest.raises(ValueError, match="derivative at 0 is 0, so W never gets a gradient"):
            RecallTransformer(task, 40, TorchReLU(), param, "FA")
    RecallTransformer(task, 40, TorchReLU(), partial(ReparamW, init_std=0.1), "FA")  # a random W has non-zero scores
    check_trainable(Reparam(task, 40), SoftmaxAttention(), "none")  # softmax's slope at 0 is σ(1−σ) ≠ 0


REFUSED_CLI = [(a, ff, al) for a in ("LinearAttention", "ReLUAttention") for ff in ("none", "F") for al in ("0.0",)] + [
    ("ReLUAttention", "F", "0.5")]


@pytest.mark.parametrize("attention,ff,alpha", REFUSED_CLI)
def test_cli_refuses_frozen_origin_before_step_0_and_names_the_fix(attention, ff, alpha, run_cli, capsys, tmp_path):
    args = ["fit", "--config", str(ROOT / "configs/recall/fig1/origin-linear-fa.yaml"),
            "--model.attention", f"icrl.recall.{attention}", "--model.feedforward", ff, "--data.alpha", alpha]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert (f"error: Origin with {attention} and feedforward '{ff}' cannot train from its zero initialisation: "
            "with W = 0 and σ(0) = 0 the attention output a is 0") in err
    assert "--model.parameterization.init_std 0.01" in err
    assert not (tmp_path / "lightning_logs").exists()


def test_cli_init_option_trains_a_refused_combination(run_cli):
    cli = run_cli("fit", "--config", str(ROOT / "configs/recall/fig1/origin-linear-fa.yaml"), "--model.feedforward", "none",
                  "--model.parameterization.init_std", "0.01", "--data.context_length", "16", "--data.batch_size", "64",
                  "--data.n_val", "128", "--trainer.max_steps", "30", "--trainer.val_check_interval", "30",
                  "--model.optimizer.lr", "0.5")
    assert cli.model.hparams["parameterization"] == {"class_path": "icrl.recall.Origin", "init_args": {"init_std": 0.01}}
    assert cli.trainer.callback_metrics["val/loss"].item() < torch.log(torch.tensor(60.0)).item() - 0.2


@pytest.mark.parametrize("ff,alpha", [("none", 0.0), ("F", 0.0), ("F", 0.5)])
def test_the_public_codes_shifted_relu_trains_zero_initialised_origin(ff, alpha):
    # relu(s + 1e-8): σ(0) = 1e-8, so a ≠ 0 at the zero start, V moves by η on step one and W follows
    task = RecallTask(**TASK, alpha=alpha)
    model = RecallTransformer(task, 40, ReLUAttention(shift=1e-8), Origin, ff)
    assert not model.param.W_.any() and not model.param.V_.any()
    losses = train(model, task)
    assert sum(losses[-5:]) / 5 < losses[0] - 0.2 and model.param.W_.any() and model.param.V_.any()
