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
    assert hparams["parameterization"] == {"class_path": "icrl.recall.Reparam", "init_args": {"value_scale": False, "free_sign": False}}
    assert hparams["attention"] == {"class_path": "icrl.recall.LinearAttention"} and hparams["task"]["alpha"] == 0.5
    assert len(logged["train/loss"]) == 6  # written every log_every_n_steps = 10 steps, not every step

    # every metric sits under the dataloader it was computed on, in `validate`'s list (and its table)
    in_dist, ood = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    assert set(in_dist) == {"val/loss", "val/expected_loss", "val/bayes_gap", "val/margin_attn", "val/margin_ff",
                            "val/logit_attn_y", "val/max_logit_attn", "val/logit_ff_tau", "val/max_logit_ff"}
    assert set(ood) == {"val/ood_loss", "val/ood_expected_loss", "val/ood_bayes_gap", "val/p_output_ood",
                        "val/p_noise_ood"}
    assert in_dist["val/loss"] == pytest.approx(logged["val/loss"][-1], abs=1e-6)

    # `icrl test` of the checkpoint scores its own held-out sets under test/: other prompts, the same population
    ckpt = cli.trainer.checkpoint_callback.last_model_path
    tested = run_cli("test", "--config", str(FIG1 / "reparam-linear-fa.yaml"), "--data.alpha", "0.5",
                     "--data.context_length", "32", "--data.n_val", "256", "--ckpt_path", ckpt)
    test_metrics, val_metrics = tested.trainer.callback_metrics, cli.trainer.callback_metrics
    assert {k[len("test/"):] for k in test_metrics} == {k[len("val/"):] for k in val_metrics if k.startswith("val/")}
    for test_loader, val_loader in zip(tested.datamodule.test_dataloader(), tested.datamodule.val_dataloader()):
        assert not torch.equal(next(iter(test_loader))["tokens"], next(iter(val_loader))["tokens"])
    # the expected loss has no label-sampling noise: the model's (near-)constant excess over H(α) on any prompts
    for name in ["expected_loss", "ood_expected_loss"]:
        assert test_metrics[f"test/{name}"].item() == pytest.approx(val_metrics[f"val/{name}"].item(), abs=2e-3), name


def test_trainable_U_removes_the_softmax_floor_in_distribution_only(run_cli):
    common = ["--data.context_length", "32", "--data.n_val", "256", "--trainer.max_steps", "150",
              "--trainer.val_check_interval", "150"]
    fixed = run_cli("fit", "--config", str(FIG1 / "reparam-softmax-fa.yaml"), *common)
    free = run_cli("fit", "--config", str(ROOT / "configs/recall/extra/reparam-softmax-fa-trainable-u.yaml"), *common)
    floor = math.log(1 + 59 / math.e)
    assert fixed.trainer.callback_metrics["val/loss"].item() >= floor - 1e-3
    assert free.trainer.callback_metrics["val/loss"].item() < floor - 1.0
    # but it fits the training outputs: on unseen ones its loss stays large (the value-scaled Reparam is the fix)
    assert free.trainer.callback_metrics["val/ood_loss"].item() > 2.0
    assert free.trainer.callback_metrics["val/p_output_ood"].item() < 0.2


EXTENSION = textwrap.dedent('''
    import torch
    from torch import nn
    from icrl.recall import Attention, Parameterization

    class SigmoidAttention(Attention):
        def forward(self, scores):
            return torch.sigmoid(scores)

    class Diagonal(Parameterization):
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
                  "--model.attention", "my_ext.SigmoidAttention",
                  "--model.parameterization", "my_ext.Diagonal",
                  "--data.context_length", "32", "--data.n_val", "128", "--trainer.max_steps", "20",
                  "--trainer.val_check_interval", "10")
    model = cli.model.model
    assert type(model.attention).__name__ == "SigmoidAttention" and type(model.param).__name__ == "Diagonal"
    assert model.param.w.abs().sum() > 0  # it trained
    assert cli.model.hparams["attention"] == {"class_path": "my_ext.SigmoidAttention"}
    assert cli.model.hparams["parameterization"] == {"class_path": "my_ext.Diagonal", "init_args": {}}
    losses = cli.trainer.callback_metrics
    assert losses["val/loss"] < math.log(60)  # better than the uniform prediction it started from
    # the checkpoint reloads with the same extension classes
    ckpt = next((tmp_path).rglob("*.ckpt"))
    from icrl.recall import RecallModule
    reloaded = RecallModule.load_from_checkpoint(ckpt, weights_only=True)
    assert type(reloaded.model.attention).__name__ == "SigmoidAttention"
    torch.testing.assert_close(reloaded.model.param.w, model.param.w)


def test_a_module_built_in_python_saves_plain_hyperparameters_and_reloads(tmp_path):
    from functools import partial

    from lightning.pytorch import Trainer

    from icrl.recall import RecallDataModule, RecallModule, Reparam, SoftmaxAttention

    data = RecallDataModule(context_length=16, batch_size=32, n_val=64)
    model = RecallModule(data.task, attention=SoftmaxAttention(), parameterization=partial(Reparam, value_scale=True))
    assert model.hparams["attention"] == {"class_path": "icrl.recall.attention.SoftmaxAttention"}
    assert model.hparams["parameterization"] == {"class_path": "icrl.recall.parameterization.Reparam",
                                                 "init_args": {"value_scale": True}}
    trainer = Trainer(max_steps=3, val_check_interval=3, check_val_every_n_epoch=None, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, data)
    reloaded = RecallModule.load_from_checkpoint(next(tmp_path.rglob("*.ckpt")), weights_only=True)
    assert type(reloaded.model.attention) is SoftmaxAttention and reloaded.model.param.log_s is not None
    torch.testing.assert_close(reloaded.model.param.log_s, model.model.param.log_s)
    assert model.model.param.log_s.item() != 0.0  # it trained, so the reload had something to restore
