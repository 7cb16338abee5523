"""The recall family through ``icrl`` as a user runs it: linking, logging, extension by subclassing."""

import math
import textwrap

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import ROOT

FIG1 = ROOT / "configs" / "recall" / "fig1"


def scalars(log_dir):
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_alpha_is_linked_from_data_into_the_model(run_cli):
    cli = run_cli("fit", "--config", str(FIG1 / "reparam-linear-fa.yaml"), "--data.alpha", "0.2",
                  "--trainer.fast_dev_run", "true")
    model = cli.model.model
    assert cli.model.task.alpha == 0.2 and model.task.noisy
    assert model.param.F()[59, 0].item() == pytest.approx(math.log(0.2 / 0.8))  # F = E(τ)(γ E(0) + Ẽ(0))ᵀ
    assert model.param.F()[59, 60].item() == 1.0


def test_fit_logs_the_documented_scalars_to_tensorboard(run_cli, tmp_path):
    cli = run_cli("fit", "--config", str(FIG1 / "reparam-linear-fa.yaml"), "--data.alpha", "0.5",
                  "--data.context_length", "32", "--data.n_val", "256", "--trainer.max_steps", "60",
                  "--trainer.val_check_interval", "30", "--trainer.log_every_n_steps", "10")
    log_dir = cli.trainer.logger.log_dir
    assert log_dir.startswith(str(tmp_path / "lightning_logs" / "recall" / "fig1" / "reparam-linear-fa"))
    logged = scalars(log_dir)
    for tag in ["train/loss", "val/loss", "val/ood_loss", "val/bayes_gap", "val/ood_bayes_gap", "val/p_output_ood",
                "val/p_noise_ood", "val/margin_attn", "val/margin_ff"]:
        assert tag in logged, tag
    assert len(logged["val/loss"]) == 2
    # Bayes gap is the loss minus H(0.5), computed from α
    assert logged["val/bayes_gap"][-1] == pytest.approx(logged["val/loss"][-1] - math.log(2), abs=1e-5)
    # after 60 steps Λ = 6: the closed form H(α) + ln(1 + (1-α)(N-2)e^{-Λ})
    assert logged["val/loss"][-1] == pytest.approx(math.log(2) + math.log(1 + 0.5 * 58 * math.exp(-6)), abs=0.01)
    hparams = cli.model.hparams
    assert hparams["parameterization"] == "reparam" and hparams["task"]["alpha"] == 0.5
    assert len(logged["train/loss"]) == 6  # written every log_every_n_steps = 10 steps, not every step

    # `icrl test` of the checkpoint scores the same fixed sets under test/
    ckpt = cli.trainer.checkpoint_callback.last_model_path
    tested = run_cli("test", "--config", str(FIG1 / "reparam-linear-fa.yaml"), "--data.alpha", "0.5",
                     "--data.context_length", "32", "--data.n_val", "256", "--ckpt_path", ckpt)
    for name in ["loss", "ood_loss", "bayes_gap", "p_noise_ood", "margin_attn"]:
        assert tested.trainer.callback_metrics[f"test/{name}"].item() == pytest.approx(
            cli.trainer.callback_metrics[f"val/{name}"].item(), abs=1e-6), name


def test_trainable_U_removes_the_softmax_floor(run_cli):
    common = ["--data.context_length", "32", "--data.n_val", "256", "--trainer.max_steps", "150",
              "--trainer.val_check_interval", "150"]
    fixed = run_cli("fit", "--config", str(FIG1 / "reparam-softmax-fa.yaml"), *common)
    free = run_cli("fit", "--config", str(ROOT / "configs/recall/extra/reparam-softmax-fa-trainable-u.yaml"), *common)
    floor = math.log(1 + 59 / math.e)
    assert fixed.trainer.callback_metrics["val/loss"].item() >= floor - 1e-3
    assert free.trainer.callback_metrics["val/loss"].item() < floor - 1.0


EXTENSION = textwrap.dedent('''
    import torch
    from torch import nn
    from icrl.recall import Attention, Parameterization

    class SigmoidAttention(Attention):
        def forward(self, scores):
            return torch.sigmoid(scores)

    class Diagonal(Parameterization, name="diagonal"):
        """W = diag(w), V = I, F = 0."""
        def __init__(self, task, d_model, feedforward="FA"):
            super().__init__(task, d_model, feedforward)
            self.w = nn.Parameter(torch.zeros(d_model))

        def W(self):
            return torch.diag(self.w)
''')


def test_new_attention_and_parameterization_by_subclassing(run_cli, tmp_path, monkeypatch):
    (tmp_path / "my_ext.py").write_text(EXTENSION)
    monkeypatch.syspath_prepend(str(tmp_path))
    cli = run_cli("fit", "--config", str(FIG1 / "reparam-linear-fa.yaml"),
                  "--model.attention", '{"class_path": "my_ext.SigmoidAttention"}',
                  "--model.parameterization", "my_ext.Diagonal",
                  "--data.context_length", "32", "--data.n_val", "128", "--trainer.max_steps", "20",
                  "--trainer.val_check_interval", "10")
    model = cli.model.model
    assert type(model.attention).__name__ == "SigmoidAttention" and type(model.param).__name__ == "Diagonal"
    assert model.param.w.abs().sum() > 0  # it trained
    assert cli.model.hparams["attention"] == "my_ext.SigmoidAttention"
    losses = cli.trainer.callback_metrics
    assert losses["val/loss"] < math.log(60)  # better than the uniform prediction it started from
    # the checkpoint reloads with the same extension classes
    ckpt = next((tmp_path).rglob("*.ckpt"))
    from icrl.recall import RecallModule
    reloaded = RecallModule.load_from_checkpoint(ckpt, weights_only=True)
    assert type(reloaded.model.attention).__name__ == "SigmoidAttention"
    torch.testing.assert_close(reloaded.model.param.w, model.param.w)
