"""Reliability of template-regression runs: bad input, resume, DDP, determinism, safe checkpoints."""

import pytest
import torch

from conftest import ROOT, end_metrics
from icrl.regression import OneLayerRegression, TemplateRegressionDataModule, TransformerRegression

CFG = str(ROOT / "configs" / "regression" / "fig2-1layer.yaml")
DEEP = str(ROOT / "configs" / "regression" / "fig2-4layer.yaml")
# K=12, N=4, d=6, m=3; 24 validation prompts in batches of 8 (3 batches: an odd count for 2 ranks)
SMALL = ["--data.n_tokens", "12", "--data.n_labelled", "4", "--data.token_dim", "6", "--data.n_basis", "3",
         "--data.noise_var", "0.1", "--data.batch_size", "8", "--data.n_train", "64", "--data.n_val", "24"]
ONE_LAYER = [CFG, *SMALL, "--model.heads", "4", "--model.beta", "0.3", "--model.optimizer.lr", "0.01"]
DEEP_SMALL = [DEEP, *SMALL, "--model.n_layers", "1", "--model.d_model", "8", "--model.d_ff", "16",
              "--model.n_heads", "2", "--model.optimizer.lr", "0.01"]

BAD = {
    "n_labelled > n_tokens": (["--data.n_labelled", "300"],
                              "n_labelled must lie in [1, n_tokens - 1] = [1, 199] (the other tokens are the unseen "
                              "examples), got n_labelled=300"),
    "n_labelled = 0": (["--data.n_labelled", "0"], "n_labelled must lie in [1, n_tokens - 1] = [1, 199]"),
    "heads = 0": (["--model.heads", "0"], "heads must be >= 1 (the paper needs heads >= n_labelled = 30), got heads=0"),
    "beta = 0": (["--model.beta", "0"], "beta (std of the initial Q_h entries) must be > 0, got beta=0.0"),
    "gamma = 0": (["--model.gamma", "0"], "gamma must be finite and > 0 (η_w = γ² η_Q), got gamma=0.0"),
    "noise_var < 0": (["--data.noise_var", "-1"], "noise_var (a variance) must be finite and >= 0, got noise_var=-1.0"),
    "ood_var < 0": (["--data.ood_var", "-4"], "ood_var (a variance) must be finite and >= 0, got ood_var=-4.0"),
    "unknown targets": (["--data.targets", "noisy"],
                        "Parser key \"targets\": Expected a typing.Literal['independent', 'noiseless', 'shared']. Got value: noisy"),
    "noiseless and N < m": (["--data.noise_var", "0", "--data.n_basis", "40"],
                            "noise_var=0 needs n_labelled >= n_basis = 40"),
    "lr = 0": (["--model.optimizer.lr", "0"], "optimizer: the learning rate must be > 0, got lr=0.0"),
    "lr < 0": (["--model.optimizer.lr", "-0.001"], "optimizer: the learning rate must be > 0, got lr=-0.001"),
    "lr < 0 (SGD)": (["--model.optimizer", "torch.optim.SGD", "--model.optimizer.lr", "-0.5"],
                     "optimizer: the learning rate must be > 0, got lr=-0.5"),
    "n_basis = 0": (["--data.n_basis", "0"], "n_basis must be >= 1, got n_basis=0"),
    "token_dim = 0": (["--data.token_dim", "0"], "token_dim must be >= 1, got token_dim=0"),
    "n_tokens = 0": (["--data.n_tokens", "0"], "n_tokens must be >= 1, got n_tokens=0"),
    "batch_size = 0": (["--data.batch_size", "0"], "batch_size must be >= 1, got batch_size=0"),
    "n_val = 0": (["--data.n_val", "0"], "n_val must be >= 1, got n_val=0"),
    "negative val_seed": (["--data.val_seed", "-3"], "val_seed must be an integer >= 0, got val_seed=-3"),
    "n_train < batch_size": (["--data.n_train", "10"],
                             "n_train must be None (endless stream) or >= batch_size = 256, got n_train=10"),
    "num_workers < 0": (["--data.num_workers", "-1"], "num_workers must be >= 0, got num_workers=-1"),
    "transformer n_heads = 0": (["--config", DEEP, "--model.n_heads", "0"],
                                "n_heads must be >= 1 and divide d_model=256, got n_heads=0"),
    "transformer n_heads does not divide d_model": (["--config", DEEP, "--model.n_heads", "3"],
                                                    "n_heads must be >= 1 and divide d_model=256, got n_heads=3"),
    "transformer dropout = 1": (["--config", DEEP, "--model.dropout", "1"], "dropout must lie in [0, 1), got dropout=1.0"),
}


def assert_nothing_ran(root):
    assert not (root / "lightning_logs").exists()  # no trainer, no logger, no step
    assert not list(root.rglob("*.ckpt"))


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_setting_is_refused_before_training(case, run_cli, capsys, tmp_path):
    # in-process: the exit-2 path's one subprocess test is in tests/test_faults.py
    args, message = BAD[case]
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", CFG, *args)  # a later --config (the 4-layer one) replaces the first
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("icrl: error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err[-2000:]
    assert "Epoch" not in out + err  # no training step
    assert_nothing_ran(tmp_path)


def test_resume_under_other_targets_is_refused(run_cli, capsys):
    ckpt = run_cli("fit", "--config", *ONE_LAYER, "--trainer.max_steps", "2").trainer.checkpoint_callback.last_model_path
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", *ONE_LAYER, "--data.targets", "shared", "--trainer.max_steps", "4", "--ckpt_path", ckpt)
    assert exit_info.value.code == 2
    assert "data.targets='independent' there, 'shared' here" in capsys.readouterr().err


def test_checkpoint_holds_the_tables_and_the_stream_position(run_cli, tmp_path):
    cli = run_cli("fit", "--config", *ONE_LAYER, "--trainer.max_steps", "3", "--trainer.val_check_interval", "3")
    ckpt = cli.trainer.checkpoint_callback.last_model_path
    state = torch.load(ckpt, weights_only=True)["TemplateRegressionDataModule"]
    assert state["batches_consumed"] == 3
    torch.testing.assert_close(state["v"], cli.datamodule.v, rtol=0, atol=0)
    torch.testing.assert_close(state["f"], cli.datamodule.f, rtol=0, atol=0)
    assert state["v"].shape == (12, 6) and state["f"].shape == (12, 3)

    # a data module seeded otherwise gets the saved tables (and stream position) back
    other = TemplateRegressionDataModule(n_tokens=12, n_labelled=4, token_dim=6, n_basis=3, seed=1)
    assert not torch.equal(other.f, state["f"])
    other.load_state_dict(state)
    assert torch.equal(other.v, state["v"]) and torch.equal(other.f, state["f"]) and other.batches_consumed == 3

    # so validating the checkpoint with another data seed scores the very same validation sets
    trained = {k: v for k, v in end_metrics(cli).items() if k.startswith("val/")}
    again = end_metrics(run_cli("validate", "--config", *ONE_LAYER, "--data.seed", "1", "--ckpt_path", ckpt))
    for key, value in trained.items():
        assert again[key] == pytest.approx(value, abs=1e-6), key
    # and `icrl test` scores its own held-out sets under test/: other prompts, so other numbers
    tested = end_metrics(run_cli("test", "--config", *ONE_LAYER, "--data.seed", "1", "--ckpt_path", ckpt))
    assert tested.keys() == {"test/" + key[len("val/"):] for key in trained}
    for key, value in trained.items():
        assert tested["test/" + key[len("val/"):]] != pytest.approx(value, abs=1e-6), key

    # tables of other sizes are refused with the sizes named
    with pytest.raises(ValueError, match=r"checkpoint's tables have shapes v=\(12, 6\), f=\(12, 3\).*f=\(12, 5\)"):
        TemplateRegressionDataModule(n_tokens=12, n_labelled=4, token_dim=6, n_basis=5).load_state_dict(state)


def test_same_seed_same_metrics_and_different_seed_different_stream(run_cli):
    args = ["fit", "--config", *ONE_LAYER, "--data.n_train", "null", "--trainer.max_steps", "4",
            "--trainer.val_check_interval", "4"]
    a, b = end_metrics(run_cli(*args)), end_metrics(run_cli(*args))
    c = end_metrics(run_cli(*args, "--data.seed", "1"))
    assert a == b
    assert a["train/loss"] != c["train/loss"]
    # the seed moves the stream itself, not only the tables: give seed 1 the tables of seed 0
    hp = dict(n_tokens=12, n_labelled=4, token_dim=6, n_basis=3, batch_size=8)
    dms = [TemplateRegressionDataModule(**hp, seed=s) for s in (0, 0, 1)]
    dms[2].load_state_dict(dms[0].state_dict())
    first = [next(iter(dm.train_dataloader()))["y"] for dm in dms]
    assert torch.equal(first[0], first[1]) and not torch.equal(first[0], first[2])


@pytest.mark.parametrize("config, cls", [(ONE_LAYER, OneLayerRegression), (DEEP_SMALL, TransformerRegression)],
                         ids=["one-layer", "transformer"])
def test_checkpoint_loads_with_weights_only(config, cls, run_cli):
    cli = run_cli("fit", "--config", *config, "--trainer.max_steps", "2", "--trainer.val_check_interval", "2")
    ckpt = cli.trainer.checkpoint_callback.last_model_path
    model = cls.load_from_checkpoint(ckpt, weights_only=True)
    assert model.hparams.task == cli.datamodule.task
    for (name, p), q in zip(model.named_parameters(), cli.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


def test_two_process_ddp_run(ddp_fit, run_cli):
    ranks, ckpt = ddp_fit("--config", *ONE_LAYER, "--trainer.max_steps", "4", "--trainer.val_check_interval", "4",
                          key="y")
    assert ranks[0]["first"] != ranks[1]["first"]  # the ranks train on different samples
    assert ranks[0]["metrics"] == ranks[1]["metrics"] and "val/unseen_task_ridge_gap" in ranks[0]["metrics"]
    # the DDP checkpoint loads in one process, and one process validates it to the same numbers: each
    # validation prompt was scored exactly once over the two ranks (24 prompts, 3 batches of 8)
    model = OneLayerRegression.load_from_checkpoint(ckpt, weights_only=True)
    assert model.hparams.task["n_tokens"] == 12
    single = run_cli("validate", "--config", *ONE_LAYER, "--ckpt_path", str(ckpt))
    for key, value in ranks[0]["metrics"].items():
        assert single.trainer.callback_metrics[key].item() == pytest.approx(value, rel=1e-5, abs=1e-6), key
