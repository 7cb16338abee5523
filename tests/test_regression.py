"""Template regression (docs/science.md §T): references, models, data stream, training and configs."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from icrl.cli import cli_main
from icrl.regression import (
    OneLayerMultiHead,
    OneLayerRegression,
    TemplateRegressionDataModule,
    TransformerBaseline,
    TransformerRegression,
    best_reference,
    ridge_reference,
)

CONFIGS = sorted((Path(__file__).parents[1] / "configs" / "regression").glob("*.yaml"))
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
    pool = dm.train_dataloader().dataset.pool
    batch = next(iter(dm.train_dataloader()))["y"]
    assert pool.shape == (256, 40) and all((pool == row).all(-1).any() for row in batch)


def test_checkpoint_keeps_tables_and_resumes_the_stream(tmp_path):
    seed_everything(0)
    dm = TemplateRegressionDataModule(**SMALL)
    model = OneLayerRegression(dm.task, heads=8, beta=0.1)
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = Trainer(max_steps=3, limit_val_batches=0, logger=False, callbacks=[ckpt], enable_progress_bar=False)
    trainer.fit(model, dm)
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert state["TemplateRegressionDataModule"]["batches_consumed"] == 3
    OneLayerRegression.load_from_checkpoint(tmp_path / "last.ckpt", weights_only=True)

    other = TemplateRegressionDataModule(**{**SMALL, "seed": 1})  # resumed with another seed: the tables come back
    other.load_state_dict(state["TemplateRegressionDataModule"])
    torch.testing.assert_close(other.f, dm.f)
    resumed = TemplateRegressionDataModule(**SMALL)
    resumed.load_state_dict(state["TemplateRegressionDataModule"])
    stream = [b["y"] for _, b in zip(range(4), dm.train_dataloader())]
    torch.testing.assert_close(next(iter(resumed.train_dataloader()))["y"], stream[3])  # batches 0-2 were consumed


# --- module -------------------------------------------------------------------------------------


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


# --- configs ------------------------------------------------------------------------------------


def test_every_paper_figure_has_a_config():
    assert {c.stem for c in CONFIGS} >= {"fig2-1layer", "fig2-4layer", "fig3-gap-vs-n", "fig4-heads", "fig5-4layer-heads"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.stem)
def test_config_runs_fast_dev_run(config, tmp_path):
    overrides = {
        # the sweep each config documents, at one of its values
        "fig3-gap-vs-n": ["--data.n_labelled", "50"],
        "fig4-heads": ["--model.heads", "8"],
        "fig5-4layer-heads": ["--model.n_heads", "4"],
    }.get(config.stem, [])
    if "4layer" in config.stem:  # a batch of 256 takes ~15 s on a CPU
        overrides += ["--data.batch_size", "8"]
    args = ["fit", "--config", str(config), "--trainer.fast_dev_run", "true", "--trainer.default_root_dir", str(tmp_path)]
    cli = cli_main(args + overrides)
    assert cli.trainer.global_step == 1
    assert cli.model.hparams.task == cli.datamodule.task
