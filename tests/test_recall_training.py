"""Short population runs showing the findings of docs/science.md §R.6 (scaled down to run in CI)."""

import math

from conftest import ROOT, end_metrics

FIG1 = ROOT / "configs" / "recall" / "fig1"
SMALL = ["--data.context_length", "64", "--data.batch_size", "256", "--data.n_val", "1024"]



def test_reparam_linear_fa_reaches_the_bayes_risk_noiseless_and_noisy(run_cli):
    m = end_metrics(run_cli("fit", "--config", str(FIG1 / "reparam-linear-fa.yaml"), *SMALL,
                            "--trainer.max_steps", "300", "--trainer.val_check_interval", "300"))
    assert m["val/loss"] < 0.01 and m["val/ood_loss"] < 0.01  # Bayes risk 0, in and out of distribution
    m = end_metrics(run_cli("fit", "--config", str(FIG1 / "reparam-linear-fa.yaml"), *SMALL, "--data.alpha", "0.5",
                            "--trainer.max_steps", "150", "--trainer.val_check_interval", "150"))
    assert abs(m["val/loss"] - math.log(2)) < 0.01 and abs(m["val/ood_loss"] - math.log(2)) < 0.01
    assert abs(m["val/bayes_gap"]) < 0.01 and abs(m["val/p_noise_ood"] - 0.5) < 0.05


def test_value_scaled_reparam_softmax_fa_reaches_the_bayes_risk_in_and_out_of_distribution(run_cli):
    config = str(ROOT / "configs" / "recall" / "fig1-later" / "reparam-softmax-fa.yaml")
    m = end_metrics(run_cli("fit", "--config", config, *SMALL, "--trainer.max_steps", "300",
                            "--trainer.val_check_interval", "300"))
    assert m["val/loss"] < 0.01 and m["val/ood_loss"] < 0.01
    m = end_metrics(run_cli("fit", "--config", config, *SMALL, "--data.alpha", "0.5", "--trainer.max_steps", "150",
                            "--trainer.val_check_interval", "150"))
    assert 0 <= m["val/bayes_gap"] < 0.01 and 0 <= m["val/ood_bayes_gap"] < 0.01  # exact expected losses
    assert abs(m["val/ood_loss"] - math.log(2)) < 0.01 and abs(m["val/p_noise_ood"] - 0.5) < 0.02


def test_origin_linear_fa_fits_in_distribution_but_fails_ood(run_cli):
    m = end_metrics(run_cli("fit", "--config", str(FIG1 / "origin-linear-fa.yaml"), *SMALL,
                            "--trainer.max_steps", "300", "--trainer.val_check_interval", "300"))
    assert m["val/loss"] < 0.05
    assert m["val/ood_loss"] > 1.0 and m["val/p_output_ood"] < 0.5


def test_reparam_relu_fa_learns_from_zero_init(run_cli):
    # All scores are 0 at zero init: with relu'(0) = 0, λ would get no gradient and the loss would stay
    # at ln N; ReLUAttention's derivative 1 at 0 lets attention form and reach the Bayes risk.
    m = end_metrics(run_cli("fit", "--config", str(ROOT / "configs" / "recall" / "finite" / "reparam-relu-fa.yaml"),
                            *SMALL, "--data.n_samples", "512", "--trainer.max_steps", "200",
                            "--trainer.val_check_interval", "200"))
    assert m["val/loss"] < 0.05 and m["val/ood_loss"] < 0.05
