"""Reliability of recall runs: bad input, non-finite losses, resume, DDP, determinism, safe checkpoints."""

import subprocess

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT, end_metrics
from icrl.callbacks import NonFiniteLossError
from icrl.recall import RecallModule, RecallTask, sample_recall
from icrl.streams import generator

CFG = str(ROOT / "configs" / "recall" / "fig1" / "reparam-linear-fa.yaml")
ORIGIN = str(ROOT / "configs" / "recall" / "fig1" / "origin-linear-fa.yaml")
SMALL = ["--data.context_length", "32", "--data.batch_size", "64", "--data.n_val", "256"]

BAD = {
    "d_model below 2N": (["--model.d_model", "100"], "d_model must be >= 2 * vocab_size = 120"),
    "alpha = 1": (["--data.alpha", "1.0"], "alpha must lie in [0, 1)"),
    "alpha < 0": (["--data.alpha", "-0.1"], "alpha must lie in [0, 1)"),
    "alpha > 1": (["--data.alpha", "1.5"], "alpha must lie in [0, 1) (0 = noiseless task), got alpha=1.5"),
    "context too short (noiseless)": (["--data.context_length", "2"], "context_length must be >= 3"),
    "context too short (noisy)": (["--data.alpha", "0.5", "--data.context_length", "5"], "context_length must be >= 6"),
    "sets do not fit the vocabulary": (["--data.n_triggers", "50", "--data.n_outputs", "9"],
                                       "triggers and outputs do not fit the vocabulary"),
    "no triggers": (["--data.n_triggers", "0"], "n_triggers must be >= 1"),
    "unknown attention": (["--model.attention", "sigmoid"], "Expected a dot import path string: sigmoid"),
    "unknown parameterization": (["--model.parameterization", "foo"], "Expected a dot import path string: foo"),
    "unknown feed-forward": (["--model.feedforward", "G"], "Expected a typing.Literal['none', 'F', 'FA']. Got value: G"),
    "inexpressible feed-forward": (["--data.alpha", "0.5", "--model.feedforward", "none"],
                                   "cannot express the noisy task"),
    "lr = 0": (["--model.optimizer.lr", "0"], "lr must be > 0, got lr=0.0"),
    "lr < 0 (torch optimizer)": (["--model.optimizer", "torch.optim.SGD", "--model.optimizer.lr", "-0.5"],
                                 "optimizer: the learning rate must be > 0, got lr=-0.5"),
    "batch size 0": (["--data.batch_size", "0"], "batch_size must be >= 1"),
    "negative seed": (["--data.seed", "-1"], "seed must be an integer >= 0, got seed=-1"),
    "finite sample without noise targets": (["--data.alpha", "0.0001", "--data.n_samples", "512"],
                                            "the finite sample (n_samples=512, seed=0) has no noise targets"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_setting_is_refused_before_training(case, run_cli, capsys, tmp_path):
    # in-process: the exit-2 path's one subprocess test is in tests/test_faults.py
    args, message = BAD[case]
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", CFG, *args)
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("icrl: error:")]
    assert len(errors) == 1 and message in errors[0], err[-2000:]
    assert "Training" not in out + err
    assert not (tmp_path / "lightning_logs").exists()  # no trainer, no step, no log


# The default checks every step on a CPU; an accelerator's default reads the losses in groups (one sync),
# still naming the first bad step and checkpointing nothing after it.
GUARDS = {"every step": [], "every 10 steps": ["--trainer.callbacks+=icrl.callbacks.NonFiniteGuard",
                                              "--trainer.callbacks.check_every_n_steps=10"]}


@pytest.mark.parametrize("guard", GUARDS.values(), ids=GUARDS.keys())
def test_non_finite_loss_stops_at_once_and_keeps_the_last_good_checkpoint(guard, run_cli, tmp_path):
    # SGD at lr 1e20: the loss of the third step is the first NaN; the message counts steps from 1
    with pytest.raises(NonFiniteLossError, match=r"train/loss = nan at step 3;.*lr=\[1e\+20\]"):
        run_cli("fit", "--config", ORIGIN, *SMALL, "--model.optimizer", "torch.optim.SGD",
                "--model.optimizer.lr", "1e20", "--trainer.max_steps", "50", "--checkpoint_every_n_steps", "2",
                *guard)
    ckpts = list(tmp_path.rglob("*.ckpt"))
    assert len(ckpts) == 1
    state = torch.load(ckpts[0], weights_only=True)
    assert state["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())


DDP = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]


@pytest.mark.parametrize("processes", [[], DDP], ids=["one process", "two DDP processes"])
def test_non_finite_loss_exits_with_status_1_from_the_command_line(processes, icrl_cmd, tmp_path):
    # under DDP both processes stop at the same step (none is left waiting in an all-reduce)
    proc = subprocess.run([*icrl_cmd, "fit", "--config", ORIGIN, *SMALL, "--model.optimizer", "torch.optim.SGD",
                           "--model.optimizer.lr", "1e20", "--trainer.max_steps", "50", *processes,
                           "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "icrl: error: train/loss = nan at step 3" in proc.stderr



def test_same_seed_same_metrics_and_different_seed_different_stream(run_cli):
    args = ["fit", "--config", ORIGIN, *SMALL, "--trainer.max_steps", "10", "--trainer.val_check_interval", "10"]
    a, b = end_metrics(run_cli(*args)), end_metrics(run_cli(*args))
    c = end_metrics(run_cli(*args, "--data.seed", "1"))
    assert a == b
    assert a["train/loss"] != c["train/loss"]


def test_checkpoint_loads_with_weights_only(run_cli, tmp_path):
    cli = run_cli("fit", "--config", CFG, *SMALL, "--data.alpha", "0.2", "--trainer.max_steps", "5",
                  "--trainer.val_check_interval", "5")
    ckpt = cli.trainer.checkpoint_callback.last_model_path
    model = RecallModule.load_from_checkpoint(ckpt, weights_only=True)
    assert model.task == RecallTask(alpha=0.2, context_length=32)
    torch.testing.assert_close(model.model.param.lam, cli.model.model.param.lam)


def test_two_process_ddp_run(ddp_fit, run_cli):
    # 256 validation prompts in batches of 96: an odd number of batches, which a DistributedSampler would pad
    val = ["--data.val_batch_size", "96"]
    ranks, ckpt = ddp_fit("--config", ORIGIN, *SMALL, *val, "--data.alpha", "0.5", "--trainer.max_steps", "10",
                          "--trainer.val_check_interval", "10", key="tokens")
    assert ranks[0]["first"] != ranks[1]["first"]  # the ranks train on different samples
    assert ranks[0]["metrics"] == ranks[1]["metrics"]  # metrics are reduced over both ranks
    # the DDP checkpoint loads in one process, and one process validates it to the same numbers
    model = RecallModule.load_from_checkpoint(ckpt, weights_only=True)
    assert model.task.alpha == 0.5
    single = run_cli("validate", "--config", ORIGIN, *SMALL, "--data.alpha", "0.5", "--ckpt_path", str(ckpt))
    for key, value in ranks[0]["metrics"].items():
        assert single.trainer.callback_metrics[key].item() == pytest.approx(value, abs=1e-6), key


@settings(max_examples=60, deadline=None)
@given(vocab=st.integers(8, 80), n_triggers=st.integers(1, 4), n_outputs=st.integers(1, 4),
       context=st.integers(6, 40), alpha=st.sampled_from([0.0, 0.1, 0.5, 0.9]), ood=st.booleans(),
       seed=st.integers(0, 2 ** 31))
def test_sampler_invariants_for_random_sizes(vocab, n_triggers, n_outputs, context, alpha, ood, seed):
    if n_triggers + n_outputs > vocab - 2:
        with pytest.raises(ValueError, match="do not fit the vocabulary"):
            RecallTask(vocab, n_triggers, n_outputs, context, alpha)
        return
    task = RecallTask(vocab, n_triggers, n_outputs, context, alpha)
    b = sample_recall(task, 32, generator(seed), ood=ood)
    z, y, target = b["tokens"], b["output"], b["target"]
    q = z[:, -1]
    lo, hi = task.ood_outputs if ood else task.outputs
    assert ((y >= lo) & (y < hi)).all()
    assert ((target == y) | (alpha > 0) & (target == task.noise_token)).all()
    assert ((z >= 0) & (z < vocab)).all()
    is_q = z[:, :-1] == q[:, None]
    n_bigrams = 2 if alpha > 0 else 1
    assert (is_q.sum(1) == n_bigrams).all()  # the trigger only at the bigrams (and last)
    assert not is_q[:, -1].any()  # a bigram starts at p <= T-3
    nxt = torch.roll(z, -1, 1)[:, :-1][is_q].view(-1, n_bigrams)
    assert (nxt == y[:, None]).any(1).all()
    if alpha > 0:
        assert (q == 0).all() and ((nxt == task.noise_token).sum(1) == 1).all()
        assert ((z == task.noise_token).sum(1) == 1).all()
        pos = is_q.nonzero()[:, 1].view(-1, 2)
        assert (pos[:, 1] - pos[:, 0] >= 2).all()  # no overlap
    else:
        assert (z[:, :-1] != task.noise_token).all()


def test_guard_stops_every_process_when_another_one_saw_a_non_finite_loss():
    # a finite loss here, but the all-reduced decision of the DDP processes says some process saw NaN
    from types import SimpleNamespace

    from icrl.callbacks import NonFiniteGuard

    decisions = []
    strategy = SimpleNamespace(reduce_boolean_decision=lambda ok, all: decisions.append(ok) or False)
    trainer = SimpleNamespace(world_size=2, strategy=strategy, global_step=7, optimizers=[], default_root_dir=".",
                              log_every_n_steps=10)
    module = SimpleNamespace(hparams={}, device=torch.device("cpu"))
    guard = NonFiniteGuard()
    guard.on_train_start(trainer, module)
    with pytest.raises(NonFiniteLossError, match="a non-finite train/loss on another process at step 7"):
        guard.on_train_batch_end(trainer, module, torch.tensor(0.5), None, 0)
    assert decisions == [True]
