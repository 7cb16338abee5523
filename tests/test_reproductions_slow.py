"""The issues' acceptance runs at the configs' full sizes (minutes on a CPU): ``pytest -m slow``."""

import math

import pytest

from conftest import ROOT, end_metrics

FIG1 = ROOT / "configs" / "recall" / "fig1"
pytestmark = pytest.mark.slow


def test_fig1_reparam_linear_fa_noisy_reaches_ln2_in_and_out_of_distribution(run_cli):
    m = end_metrics(run_cli("fit", "--config", str(FIG1 / "reparam-linear-fa.yaml"), "--data.alpha", "0.5"))
    assert abs(m["val/loss"] - math.log(2)) < 0.01 and abs(m["val/ood_loss"] - math.log(2)) < 0.01
    assert abs(m["val/p_noise_ood"] - 0.5) < 0.05


def test_fig1_origin_linear_fa_fits_but_fails_on_unseen_outputs(run_cli):
    m = end_metrics(run_cli("fit", "--config", str(FIG1 / "origin-linear-fa.yaml")))
    assert m["val/loss"] < 0.01 and m["val/ood_loss"] > 1


def test_fig1_fixed_u_softmax_floors_at_its_closed_form(run_cli):
    m = end_metrics(run_cli("fit", "--config", str(FIG1 / "reparam-softmax-fa.yaml")))
    assert m["val/loss"] == pytest.approx(math.log(1 + 59 / math.e), abs=0.01)


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_fig1_later_value_scaled_softmax_reaches_the_bayes_risk_out_of_distribution(alpha, run_cli):
    m = end_metrics(run_cli("fit", "--config", str(ROOT / "configs/recall/fig1-later/reparam-softmax-fa.yaml"),
                            "--data.alpha", str(alpha)))
    risk = -alpha * math.log(alpha) - (1 - alpha) * math.log(1 - alpha) if alpha else 0.0
    assert abs(m["val/ood_loss"] - risk) < 0.01 and abs(m["val/loss"] - risk) < 0.01
    assert 0 <= m["val/bayes_gap"] < 0.01 and 0 <= m["val/ood_bayes_gap"] < 0.01
    if alpha:
        assert abs(m["val/p_noise_ood"] - alpha) < 0.02


@pytest.mark.parametrize("model", ["reparam-relu-fa", "reparam-linear-fa"])
def test_finite_sample_reparam_generalizes_to_unseen_outputs(model, run_cli):
    m = end_metrics(run_cli("fit", "--config", str(ROOT / "configs" / "recall" / "finite" / f"{model}.yaml")))
    assert m["val/ood_loss"] < 0.01


def test_fig2_one_layer_regression_ends_at_ridge(run_cli):
    m = end_metrics(run_cli("fit", "--config", str(ROOT / "configs" / "regression" / "fig2-1layer.yaml")))
    assert m["val/loss"] == pytest.approx(m["val/ridge_loss"], rel=0.1)
    assert m["val/ridge_gap"] < 0.1 * m["val/ridge_loss"]
    assert m["val/unseen_task_loss"] == pytest.approx(m["val/unseen_task_ridge_loss"], rel=0.1)
