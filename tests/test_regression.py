"""Template regression (docs/science.md §T): references, models, data stream, training and configs."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from torch import nn
from torch.utils.data import DataLoader

from icrl.regression import (
    OneLayerMultiHead,
    OneLayerRegression,
    TemplateRegressionDataModule,
    TransformerBaseline,
    TransformerRegression,
    best_reference,
    ridge_reference,
)
from icrl.regression.data import TARGETS, TRAIN, generator, sample_labels
from icrl.regression.references import expected_ridge_best_gap

SMALL = dict(n_tokens=40, n_labelled=10, token_dim=16, n_basis=5, noise_var=0.05, batch_size=64, n_val=128)


def quiet_trainer(**kwargs) -> Trainer:
    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return Trainer(accelerator="cpu", **quiet, **kwargs)


# --- references ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n, m", [(6, 4), (3, 5)])  # over- and under-determined prompts
def test_references_match_numpy_formula(n, m):
    rng = np.random.default_rng(0)
    k, b, tau = 9, 4, 0.3
    f, y = rng.normal(size=(k, m)), rng.normal(size=(b, n))
    ridge = ridge_reference(torch.tensor(f), torch.tensor(y), tau).numpy()
    best = best_reference(torch.tensor(f), torch.tensor(y), tau).numpy()
    z = f[:n].T  # (m, N)
    for i in range(b):
        np.testing.assert_allclose(ridge[i], f @ np.linalg.inv(z @ z.T + m * tau * np.eye(m)) @ z @ y[i], rtol=1e-10)
        np.testing.assert_allclose(best[i], f @ np.linalg.inv(z @ z.T + n * tau * np.eye(m)) @ z @ y[i], rtol=1e-10)


def test_ridge_and_best_coincide_at_n_equal_m():
    f, y = torch.randn(7, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(ridge_reference(f, y, 0.1), best_reference(f, y, 0.1))


# --- models -------------------------------------------------------------------------------------


def test_one_layer_matches_plain_formula():
    k, n, d, heads, b = 7, 4, 5, 3, 2
    net = OneLayerMultiHead(k, n, d, heads, beta=0.5)
    torch.nn.init.normal_(net.w)
    v, y = torch.randn(k, d), torch.randn(b, n)
    expected = torch.zeros(b, k)
    for i in range(b):
        for kk in range(k):
            for h in range(heads):
                # ŷ_k = Σ_h w_{h,k} yᵀ softmax(V_Nᵀ Q_h v_k)
                expected[i, kk] += net.w[h, kk] * (y[i] @ torch.softmax(v[:n] @ net.Q[h] @ v[kk], dim=0))
    torch.testing.assert_close(net(v, y), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(net(v.expand(b, k, d), y), expected, atol=1e-5, rtol=1e-5)  # per-prompt tokens


def test_one_layer_init():
    net = OneLayerMultiHead(200, 30, 100, heads=64, beta=0.02)
    assert net.w.abs().sum() == 0
    assert net.Q.shape == (64, 100, 100) and abs(net.Q.std().item() - 0.02) < 1e-3


def test_transformer_ignores_order_of_unlabelled_tokens():
    net = TransformerBaseline(n_labelled=3, token_dim=4, n_layers=2, d_model=16, d_ff=32, n_heads=4).eval()
    v, y = torch.randn(8, 4), torch.randn(5, 3)
    perm = torch.cat([torch.arange(3), 3 + torch.randperm(5)])
    torch.testing.assert_close(net(v[perm], y), net(v, y)[:, perm])


@pytest.mark.parametrize(
    "build, setting",
    [
        (lambda: OneLayerMultiHead(10, 3, 4, heads=0), "heads"),
        (lambda: OneLayerMultiHead(10, 3, 4, beta=0.0), "beta"),
        (lambda: TransformerBaseline(3, 4, d_model=16, n_heads=3), "n_heads"),
        (lambda: TemplateRegressionDataModule(n_tokens=10, n_labelled=12), "n_labelled"),
        (lambda: TemplateRegressionDataModule(noise_var=-1.0), "noise_var"),
        (lambda: TemplateRegressionDataModule(noise_var=float("nan")), "noise_var"),
        (lambda: TemplateRegressionDataModule(ood_mean=float("inf")), "ood_mean"),
        (lambda: TemplateRegressionDataModule(repr_std=0.0), "repr_std"),
        (lambda: OneLayerRegression(TemplateRegressionDataModule().task, lr_drop_step=0), "lr_drop_step"),
        (lambda: OneLayerRegression(TemplateRegressionDataModule().task, lr_drop_factor=1.5), "lr_drop_factor"),
        (lambda: TemplateRegressionDataModule(targets="noisy"),
         r"targets must be one of \['independent', 'noiseless', 'shared'\], got targets='noisy'"),
        (lambda: TransformerBaseline(3, 4, d_model=0, n_heads=1), "d_model"),
        (lambda: TemplateRegressionDataModule(noise_var=0.0, n_labelled=10, n_basis=20), "noise_var=0"),
        (lambda: TemplateRegressionDataModule(batch_size=64, n_train=10), "n_train"),
        (lambda: OneLayerRegression(None), "task"),
        (lambda: OneLayerRegression(TemplateRegressionDataModule().task, gamma=0.0), "gamma"),
        (lambda: OneLayerRegression(TemplateRegressionDataModule().task, optimizer=partial(torch.optim.Adam, lr=0.0)), "lr"),
    ],
)
def test_bad_settings_raise_value_error_naming_them(build, setting):
    with pytest.raises(ValueError, match=setting):
        build()


# --- data ---------------------------------------------------------------------------------------


def test_labels_have_the_template_covariance():
    # E[y yᵀ] = F Fᵀ + m τ I for λ ~ N(0, I), y_k = λᵀ (f(v_k) + ε_k)
    dm = TemplateRegressionDataModule(n_tokens=6, n_labelled=3, token_dim=2, n_basis=3, noise_var=0.5, batch_size=50_000)
    y = next(iter(dm.train_dataloader()))["y"].double()  # (B, K)
    f = dm.f.double()
    torch.testing.assert_close(y.T @ y / len(y), f @ f.T + 3 * 0.5 * torch.eye(6, dtype=torch.float64), atol=0.15, rtol=0.03)


def test_stream_is_seeded_and_independent_of_workers():
    dm = TemplateRegressionDataModule(**SMALL)
    first = [b["y"] for _, b in zip(range(4), dm.train_dataloader())]
    stream = dm.train_dataloader().dataset
    with_workers = [b["y"] for _, b in zip(range(4), DataLoader(stream, batch_size=None, num_workers=2))]
    again = [b["y"] for _, b in zip(range(4), TemplateRegressionDataModule(**SMALL).train_dataloader())]
    for a, b, c in zip(first, with_workers, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, c, rtol=0, atol=0)
    assert not torch.equal(first[0], first[1])


def test_validation_sets_are_unseen_examples_and_unseen_tasks():
    dm = TemplateRegressionDataModule(**SMALL, n_train=256)
    val, ood = (torch.cat([b["y"] for b in loader]) for loader in dm.val_dataloader())
    assert val.shape == ood.shape == (128, 40)
    assert ood.pow(2).mean() > 3 * val.pow(2).mean()  # E‖λ‖² = 5m for λ ~ N(1, 4I), m for N(0, I)
    pool = dm.train_dataloader().dataset.pool["y"]
    batch = next(iter(dm.train_dataloader()))["y"]
    assert pool.shape == (256, 40) and all((pool == row).all(-1).any() for row in batch)


@pytest.mark.parametrize("targets", TARGETS)
def test_labels_are_the_stream_from_before_targets_under_every_law(targets):
    # numbers drawn at seed 0 before targets existed: the targets' extra draws come after the labels'
    dm = TemplateRegressionDataModule(**SMALL, n_train=256, targets=targets)
    y = next(iter(dm.train_dataloader()))["y"]
    assert y[0, :2].tolist() == [-3.648298501968384, 2.1559813022613525]
    assert y.double().sum().item() == pytest.approx(90.10056462604553, rel=1e-12)
    val, ood = (torch.cat([b["y"] for b in loader]) for loader in dm.val_dataloader())
    assert val[0, :2].tolist() == [-5.858234405517578, 4.526625633239746]
    assert (val.double().sum().item(), ood.double().sum().item()) == pytest.approx((258.655319141224, 315.05205936171114),
                                                                                rel=1e-12)
    batch = next(iter(TemplateRegressionDataModule(**SMALL, targets=targets).train_dataloader()))  # population stream
    assert torch.equal(batch["y"], sample_labels(dm.f, 64, 0.05, generator(0, TRAIN, 0, 0)))
    assert batch["y"][0, :2].tolist() == [3.334144353866577, 0.5470103025436401]
    assert torch.equal(batch["target"], batch["y"]) == (targets == "shared")


def test_target_laws_moments_and_best_linear_predictor():
    # K = 6 tokens, N = 3 labelled, m = 3, τ = 0.5: m τ = 1.5. With the prompt labels y_N = y[:, :N]:
    # independent: E[t y_Nᵀ] = F Zᵀ (no m τ term on the labelled tokens); noiseless: t = F λ exactly;
    # shared: E[t y_Nᵀ] = F Zᵀ + m τ [I; 0]. The best linear predictor E[t y_Nᵀ] E[y_N y_Nᵀ]⁻¹ is then
    # ridge's matrix F (Z Zᵀ + m τ I)⁻¹ Z for the first two laws; under "shared" it copies the prompt on
    # the labelled tokens (and is ridge on the others).
    hp = dict(n_tokens=6, n_labelled=3, token_dim=2, n_basis=3, noise_var=0.5, batch_size=50_000)
    batches = {law: next(iter(TemplateRegressionDataModule(**hp, targets=law).train_dataloader())) for law in TARGETS}
    f = batches["shared"]["f"].double()  # (K, m), the same table for every law
    z = f[:3].T  # (m, N)
    ridge = f @ torch.linalg.solve(z @ z.T + 1.5 * torch.eye(3, dtype=torch.float64), z)  # (K, N)
    copy = torch.cat([torch.eye(3), torch.zeros(3, 3)]).double()  # (K, N): ŷ_k = y_k on the labelled tokens
    sigma = z.T @ z + 1.5 * torch.eye(3, dtype=torch.float64)  # (N, N) = E[y_N y_Nᵀ]
    mse = {}
    for law, batch in batches.items():
        y, t = batch["y"].double(), batch["target"].double()  # (B, K)
        c = f @ z + 1.5 * copy * (law == "shared")  # (K, N) = E[t y_Nᵀ]
        torch.testing.assert_close(t.T @ y[:, :3] / len(y), c, atol=0.15, rtol=0.03)
        fitted = torch.linalg.lstsq(y[:, :3], t).solution.T  # (K, N): least squares of t on y_N
        best = torch.cat([copy[:3], ridge[3:]]) if law == "shared" else ridge
        torch.testing.assert_close(fitted, best, atol=0.03, rtol=0)
        # labelled tokens: E[(aᵀ y_N − t_k)²] = aᵀ Σ a − 2 aᵀ c_k + E[t_k²], E[t_k²] = ‖f_k‖² (+ m τ unless noiseless)
        mse[law] = {}
        for name, a in dict(ridge=ridge[:3], copy=copy[:3]).items():  # (N, N) each: rows of the labelled tokens
            expected = (a @ sigma * a).sum(1) - 2 * (a * c[:3]).sum(1) + f[:3].square().sum(1) + 1.5 * (law != "noiseless")
            torch.testing.assert_close((y[:, :3] @ a.T - t[:, :3]).square().mean(0), expected, atol=0.1, rtol=0.05)
            mse[law][name] = expected.mean().item()
    clean = batches["noiseless"]["target"].double().T  # (K, B)
    assert (clean - f @ torch.linalg.lstsq(f, clean).solution).abs().max() < 1e-4  # t = F λ: in F's column space
    assert torch.equal(batches["independent"]["target"][:, 3:], batches["independent"]["y"][:, 3:])  # unshown labels
    # copying is exact under "shared" and, against an independent target, carries both noises: 2 m τ = 3
    assert mse["shared"]["copy"] == pytest.approx(0, abs=1e-12) and mse["independent"]["copy"] == pytest.approx(3.0)
    assert mse["shared"]["ridge"] > 0.3
    assert mse["independent"]["ridge"] < mse["independent"]["copy"] and mse["noiseless"]["ridge"] < mse["noiseless"]["copy"]


def test_a_batch_beyond_half_the_memory_is_refused_with_the_example_size_of_a_drawn_batch(monkeypatch):
    dm = TemplateRegressionDataModule(**{**SMALL, "batch_size": 3})
    batch = next(iter(dm.train_dataloader()))  # the tables v, f (K rows) come once a batch, not an example
    assert dm.example_bytes * 3 == sum(t.nbytes for t in batch.values() if len(t) == 3) == batch["y"].nbytes * 2
    monkeypatch.setattr("os.sysconf", lambda name: {"SC_PAGE_SIZE": 1, "SC_PHYS_PAGES": 6 * dm.example_bytes - 1}[name])
    with pytest.raises(ValueError, match=r"^data\.batch_size=3: one training batch takes 0\.0 GiB \(320 bytes an example\)"):
        TemplateRegressionDataModule(**{**SMALL, "batch_size": 3})
    TemplateRegressionDataModule(**{**SMALL, "batch_size": 2})


# --- module -------------------------------------------------------------------------------------


class Copy(nn.Module):
    """Predicts each labelled token's label and 0 elsewhere: ``(B, N)`` labels to ``(B, K)`` predictions."""

    def forward(self, v, y):
        return torch.nn.functional.pad(y, (0, v.shape[-2] - y.shape[-1]))


def test_metrics_and_training_loss_on_a_toy_case_in_closed_form(monkeypatch):
    # K = 3, N = m = 2, τ = 0.5, f = [e_1, e_2, e_1 + e_2]: Z = I, m τ = N τ = 1, so ridge = best
    # = [y_1, y_2, y_1 + y_2] / 2 = [1, 2, 3] for the prompt y = [2, 4]; the copying model predicts [2, 4, 0]
    task = dict(n_tokens=3, n_labelled=2, token_dim=1, n_basis=2, noise_var=0.5)
    model = OneLayerRegression(task, heads=1)
    model.net = Copy()
    monkeypatch.setattr(model, "log", lambda *args, **kwargs: None)  # no trainer to log to
    monkeypatch.setattr(model, "is_logging_step", lambda: False)
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    batch = {"v": torch.zeros(3, 1), "f": f, "y": torch.tensor([[2.0, 4.0, 7.0]]), "target": torch.tensor([[1.0, 5.0, 3.0]])}
    model.validation_step(batch, 0, 0)
    values = {name: metric.compute().item() for name, metric in model.eval_metrics[0].items()}
    assert values == pytest.approx(dict(
        loss=(1 + 1 + 9) / 3, unseen_example_loss=9, ridge_loss=(0 + 9 + 0) / 3, unseen_example_ridge_loss=0,
        best_loss=3, ridge_gap=(1 + 4 + 9) / 3, labelled_ridge_gap=(1 + 4) / 2, unseen_example_ridge_gap=9,
        best_gap=14 / 3, ridge_best_gap=0))
    assert model.training_step(batch, 0).item() == pytest.approx(11 / 3)  # against the targets, not y


@pytest.mark.parametrize("opt", [partial(torch.optim.Adam, lr=1e-3), partial(torch.optim.SGD, lr=1e-2)])
def test_readout_learning_rate_is_gamma_squared(opt):
    model = OneLayerRegression(TemplateRegressionDataModule(**SMALL).task, heads=4, gamma=3.0, optimizer=opt)
    q_group, w_group = model.configure_optimizers().param_groups
    assert q_group["params"] == [model.net.Q] and w_group["params"] == [model.net.w]
    assert w_group["lr"] == pytest.approx(9 * q_group["lr"])


def test_transformer_readout_group():
    model = TransformerRegression(TemplateRegressionDataModule(**SMALL).task, n_layers=1, d_model=16, d_ff=32, n_heads=2)
    q_group, w_group = model.configure_optimizers().param_groups
    assert len(w_group["params"]) == 2 and len(q_group["params"]) + 2 == len(list(model.parameters()))


def test_training_approaches_ridge():
    seed_everything(0)
    dm = TemplateRegressionDataModule(**SMALL)
    model = OneLayerRegression(dm.task, heads=16, beta=0.1, gamma=3.0, optimizer=partial(torch.optim.Adam, lr=3e-3))
    # inference_mode=False: metric states made under inference mode cannot be updated in fit's validation
    results = quiet_trainer(inference_mode=False).validate(model, dm, verbose=False)  # one dict per val set
    start = {name: value for per_set in results for name, value in per_set.items()}
    trainer = quiet_trainer(max_steps=300, val_check_interval=300, check_val_every_n_epoch=None)
    trainer.fit(model, dm)
    end = {k: v.item() for k, v in trainer.callback_metrics.items()}
    assert end["val/loss"] < 0.1 * start["val/loss"]
    assert end["val/ridge_gap"] < 0.05 * start["val/ridge_gap"]
    assert end["val/loss"] < 1.2 * end["val/ridge_loss"]
    assert end["val/unseen_example_loss"] < 1.2 * end["val/unseen_example_ridge_loss"]
    assert end["val/unseen_task_ridge_gap"] < 0.05 * start["val/unseen_task_ridge_gap"]
    # the labelled tokens too (0.003 × the start; with "shared" targets the model copies them: 0.024 ×)
    assert end["val/labelled_ridge_gap"] < 0.01 * start["val/labelled_ridge_gap"]
    assert end["val/unseen_example_ridge_gap"] < 0.01 * start["val/unseen_example_ridge_gap"]


def test_expected_ridge_best_gap_matches_the_sampled_gap_of_the_references():
    dm = TemplateRegressionDataModule(n_tokens=60, n_labelled=20, n_basis=30, noise_var=0.01, repr_std=0.2)
    y = sample_labels(dm.f, 40_000, 0.01, generator(3))  # (B, K)
    sampled = ((ridge_reference(dm.f, y[:, :20], 0.01) - best_reference(dm.f, y[:, :20], 0.01)) ** 2).mean().item()
    assert expected_ridge_best_gap(dm.f, 20, 0.01) == pytest.approx(sampled, rel=0.03)


@pytest.mark.parametrize("repr_std,monotone", [(1.0, False), (0.1, True)])
def test_fig3_gap_shrinks_towards_n_equal_m_only_when_the_regulariser_dominates(repr_std, monotone):
    # docs/science.md §T.3: at τ/σ_f² = 0.01 the gap peaks near N = 72 and 129; at τ/σ_f² = 1 it falls to 0 at N = m
    # from both sides
    f = TemplateRegressionDataModule(n_basis=100, n_labelled=100, repr_std=repr_std).f
    left, right = ([expected_ridge_best_gap(f, n, 0.01) for n in grid] for grid in ((50, 70, 90, 100), (150, 130, 110, 100)))
    assert left[-1] == right[-1] == pytest.approx(0.0, abs=1e-12)
    shrinks = all(a > b for a, b in zip(left, left[1:])) and all(a > b for a, b in zip(right, right[1:]))
    assert shrinks == monotone


def test_lr_drop_scales_both_groups_from_its_step_on():
    task = TemplateRegressionDataModule(**SMALL).task
    module = OneLayerRegression(task, heads=4, gamma=2.0, optimizer=partial(torch.optim.SGD, lr=0.1), lr_drop_step=2,
                                lr_drop_factor=0.1)
    config = module.configure_optimizers()
    opt, drop = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(3):
        lrs += [g["lr"] for g in opt.param_groups]
        opt.step()
        drop.step()
    assert lrs == pytest.approx([0.1, 0.4, 0.1, 0.4, 0.01, 0.04])  # (η_Q, η_w = γ² η_Q) per step
    assert isinstance(OneLayerRegression(task, heads=4).configure_optimizers(), torch.optim.Adam)
