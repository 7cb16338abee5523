"""Recall metrics: the exact expected loss, its Bayes gap (≥ 0 by Gibbs' inequality), and states every device holds."""

import math
from functools import partial

import pytest
import torch
from torch.nn import functional as nnf

from icrl.recall import (Origin, RecallTask, RecallTransformer, Reparam, ReparamW, SoftmaxAttention, entropy,
                         sample_recall)
from icrl.recall.metrics import (BayesGap, ExpectedCrossEntropy, LogitMargin, MeanCrossEntropy, MeanLogit, MeanMaxLogit,
                                 MeanProbability, cross_entropy, expected_cross_entropy, logit, logit_margin, max_logit,
                                 probability)
from icrl.streams import generator

RANDOM = {"origin": partial(Origin, init_std=1.0), "reparam_w": partial(ReparamW, value_scale=True, init_std=1.0),
          "reparam": partial(Reparam, value_scale=True)}


@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.5, 0.8])
@pytest.mark.parametrize("param", RANDOM)
def test_bayes_gap_of_random_models_is_never_negative(alpha, param):
    task = RecallTask(context_length=32, alpha=alpha)
    for seed in range(3):
        torch.manual_seed(seed)
        model = RecallTransformer(task, attention=SoftmaxAttention(), parameterization=RANDOM[param])
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(10 * torch.rand(()))  # from near-uniform predictions to saturated ones
        for ood in (False, True):
            batch = sample_recall(task, 256, generator(seed), ood=ood)
            gap = BayesGap(alpha, task.noise_token, task.bayes_risk)
            gap.update(model(batch["tokens"]).logits, batch["output"])
            assert gap.compute().item() >= -1e-6


def test_expected_loss_is_the_label_noise_average_of_the_cross_entropy():
    task = RecallTask(context_length=32, alpha=0.2)
    batch = sample_recall(task, 64, generator(0))
    logits = 3 * torch.randn(64, 60, generator=torch.Generator().manual_seed(1))
    tau = torch.full_like(batch["output"], task.noise_token)
    reference = (0.2 * nnf.cross_entropy(logits, tau) + 0.8 * nnf.cross_entropy(logits, batch["output"])).item()
    metric = ExpectedCrossEntropy(0.2, task.noise_token)
    metric.update(logits[:40], batch["output"][:40])  # accumulated over two batches
    metric.update(logits[40:], batch["output"][40:])
    assert metric.compute().item() == pytest.approx(reference, abs=1e-6)
    # noiseless, it is the cross-entropy of the target (which is y)
    noiseless = RecallTask(context_length=32)
    batch = sample_recall(noiseless, 64, generator(0))
    expected, sampled = ExpectedCrossEntropy(0.0, noiseless.noise_token), MeanCrossEntropy()
    expected.update(logits, batch["output"])
    sampled.update(logits, batch["target"])
    assert expected.compute().item() == pytest.approx(sampled.compute().item(), abs=1e-6)


def test_a_bayes_optimal_model_has_no_label_sampling_bias():
    # the value-scaled softmax Reparam at λ = 10, s = 20 is Bayes-optimal to 1e-5; the sampled loss on a fixed set
    # misses H(α) by the set's α̂ − α, the expected loss does not
    task = RecallTask(alpha=0.2)
    model = RecallTransformer(task, attention=SoftmaxAttention(), parameterization=RANDOM["reparam"])
    with torch.no_grad():
        model.param.lam.fill_(10.0)
        model.param.log_s.fill_(math.log(20.0))
    batch = sample_recall(task, 1024, generator(12345))
    logits = model(batch["tokens"]).logits
    gap, sampled = BayesGap(0.2, task.noise_token, entropy(0.2)), MeanCrossEntropy()
    gap.update(logits, batch["output"])
    sampled.update(logits, batch["target"])
    assert 0 <= gap.compute().item() < 1e-5
    assert abs(sampled.compute().item() - entropy(0.2)) > 1e-3


def test_metric_states_hold_no_float64():
    # Apple's MPS has no float64: every state is float32 (or an integer), as torchmetrics' MeanMetric keeps them
    metrics = [MeanCrossEntropy(), ExpectedCrossEntropy(0.5, 3), BayesGap(0.5, 3, 0.69), MeanProbability(), LogitMargin()]
    for metric in metrics:
        metric.update(torch.randn(4, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 3]))
        for name in metric._defaults:
            assert getattr(metric, name).dtype == torch.float32, (type(metric).__name__, name)
        assert metric.compute().dtype == torch.float32


def test_a_diverged_model_shows_nan_metrics():
    metric = MeanProbability()
    metric.update(torch.tensor([[float("nan"), 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
    assert metric.compute().isnan()


IN_DIST = {"loss", "expected_loss", "bayes_gap", "margin_attn", "logit_attn_y", "max_logit_attn"}
OOD = {"ood_loss", "ood_expected_loss", "ood_bayes_gap", "p_output_ood"}
NOISY = ({"margin_ff", "logit_ff_tau", "max_logit_ff"}, {"p_noise_ood"})  # in distribution, OOD


@pytest.mark.parametrize("alpha", [0.0, 0.2])
def test_the_module_logs_each_metric_under_its_loader_over_every_batch_and_resets_between_validations(alpha):
    from lightning.pytorch import Trainer

    from icrl.recall import RecallDataModule, RecallModule

    data = RecallDataModule(context_length=16, alpha=alpha, n_val=96, val_batch_size=32)  # 3 batches a loader
    model = RecallModule(data.task, attention=SoftmaxAttention(), parameterization=RANDOM["origin"])
    trainer = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    first, again = trainer.validate(model, data, verbose=False), trainer.validate(model, data, verbose=False)
    assert first == again  # nothing of the first validation is left in the second
    extra = NOISY if alpha else (set(), set())
    assert [set(results) for results in first] == [{f"val/{name}" for name in names | more}
                                                   for names, more in zip((IN_DIST, OOD), extra)]
    tau = model.task.noise_token
    with torch.no_grad():
        for results, batch, ood in zip(first, data.eval_sets(), ("", "ood_")):
            out, y = model(batch["tokens"]), batch["output"]
            expected = {"loss": cross_entropy(out.logits, batch["target"]),
                        "expected_loss": expected_cross_entropy(out.logits, y, alpha, tau)}
            for name, values in expected.items():
                assert results[f"val/{ood}{name}"] == pytest.approx(values.mean().item(), abs=1e-6), name
            if not ood:
                assert results["val/margin_attn"] == pytest.approx(logit_margin(out.logits_attn, y).mean().item(), abs=1e-5)


@pytest.mark.parametrize("metric, function", [(MeanCrossEntropy(), cross_entropy), (MeanProbability(), probability),
                                              (LogitMargin(), logit_margin), (MeanLogit(), logit),
                                              (MeanMaxLogit(), max_logit)])
def test_each_metric_is_the_mean_of_its_function(metric, function):
    logits, index = torch.randn(64, 10, generator=torch.Generator().manual_seed(0)), torch.arange(64) % 10
    metric.update(logits[:40], index[:40])  # accumulated over two batches
    metric.update(logits[40:], index[40:])
    assert metric.compute().item() == pytest.approx(function(logits, index).mean().item(), abs=1e-6)
