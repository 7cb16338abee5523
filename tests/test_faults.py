"""Faults: stopped and killed runs, broken and foreign checkpoints, mismatched resumes, bad settings; each must
end in an exact resume or in one clear line. Each exit status of the ``icrl`` console script is checked once
through a subprocess (0, 2, 130, 143; 1 in test_reliability_recall.py), the error tables in-process."""

import os
import shlex
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import backend_context, plugin_data_pb2

from conftest import ROOT
from icrl.callbacks import StepProgressBar
from icrl.checkpoints import SIGNATURE_KEY, check_resume, load_checkpoint
from icrl.cli import cli_main
from icrl.scalars import read_scalars
from icrl.streams import generator

ORIGIN = str(ROOT / "configs" / "recall" / "fig1" / "origin-linear-fa.yaml")
# α = 0.2: Origin's weights see every batch, so a resume at the wrong place in the stream would show
SMALL = ["--data.context_length", "16", "--data.batch_size", "8", "--model.d_model", "128", "--data.n_val", "64",
         "--data.alpha", "0.2"]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
ICRL = Path(sys.executable).with_name("icrl")  # the console script of this environment
# as a user's shell, which has not activated the venv: icrl's own hint must still name a TensorBoard that runs
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != ICRL.parent)}


def icrl(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([str(ICRL), *args], capture_output=True, text=True, timeout=timeout, env=ENV)


def last_ckpt(root: Path) -> Path:
    return root / "lightning_logs" / "recall" / "fig1" / "origin-linear-fa" / "version_0" / "checkpoints" / "last.ckpt"


def started(root: Path, *args: str) -> subprocess.Popen:
    """``icrl fit`` running in the background; returns once its first periodic checkpoint is on disk."""
    proc = subprocess.Popen([str(ICRL), "fit", *args, "--trainer.default_root_dir", str(root)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not last_ckpt(root).exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.02)
    return proc


def val_scalars(log_dir: Path, prefix: str = "val/") -> dict[str, tuple[int, float]]:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: (acc.Scalars(tag)[-1].step, acc.Scalars(tag)[-1].value) for tag in acc.Tags()["scalars"]
            if tag.startswith(prefix)}


def max_weight_diff(a: Path, b: Path) -> float:
    sa, sb = (torch.load(p, weights_only=True)["state_dict"] for p in (a, b))
    assert sa.keys() == sb.keys()
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa)


def test_sigterm_and_kill_9_runs_resume_exactly(tmp_path):
    common = ["--config", ORIGIN, *SMALL, *QUIET, "--trainer.val_check_interval", "50",
              "--trainer.log_every_n_steps", "5", "--checkpoint_every_n_steps", "10"]
    endless = [*common, "--trainer.max_steps", "100000"]

    # SIGTERM: the run stops at a step boundary, writes last.ckpt and prints the command that resumes it
    proc = started(tmp_path / "term", *endless)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    term = last_ckpt(tmp_path / "term")
    stopped_at = torch.load(term, weights_only=True)["global_step"]
    assert f"icrl: checkpoint at step {stopped_at}: {term}" in err
    resume = shlex.split(err.split("resume with: ")[1].splitlines()[0])
    assert resume[0] == "icrl" and resume[-2:] == ["--ckpt_path", str(term)]

    # kill -9: nothing runs at the end; the last periodic checkpoint is whole (written to a temporary, renamed)
    proc = started(tmp_path / "kill", *endless)
    proc.kill()
    proc.communicate(timeout=60)
    killed = last_ckpt(tmp_path / "kill")
    killed_at = torch.load(killed, weights_only=True)["global_step"]
    assert killed_at > 0 and killed_at % 10 == 0

    # both resume to the same end as one uninterrupted run; the end (not a multiple of the intervals)
    # still gets its validation and its checkpoint
    end = str(max(stopped_at, killed_at) + 13)
    assert icrl(*resume[1:], "--trainer.max_steps", end).returncode == 0
    assert icrl("fit", *common, "--trainer.max_steps", end, "--ckpt_path", str(killed),
                "--trainer.default_root_dir", str(tmp_path / "kill")).returncode == 0
    assert icrl("fit", *common, "--trainer.max_steps", end, "--trainer.default_root_dir",
                str(tmp_path / "full")).returncode == 0
    full = last_ckpt(tmp_path / "full")
    for ckpt in (term, killed):
        assert torch.load(ckpt, weights_only=True)["global_step"] == int(end)
        assert max_weight_diff(ckpt, full) <= 1e-6
        # one run folder: the resumed run logged on into the checkpoint's own version folder
        assert [p.name for p in ckpt.parents[2].iterdir()] == ["version_0"]
        resumed, uninterrupted = val_scalars(ckpt.parents[1]), val_scalars(full.parents[1])
        assert resumed.keys() == uninterrupted.keys() and "val/loss" in resumed
        for tag, (step, value) in uninterrupted.items():
            assert resumed[tag][0] == step  # the same last validation
            assert resumed[tag][1] == pytest.approx(value, abs=1e-6), tag


def test_sigint_stops_with_status_130_and_a_checkpoint(tmp_path):
    proc = started(tmp_path, "--config", ORIGIN, *SMALL, *QUIET, "--trainer.max_steps", "100000",
                   "--checkpoint_every_n_steps", "5")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "stopped by SIGINT; resume with: icrl fit" in err and "Traceback" not in err
    state = torch.load(last_ckpt(tmp_path), weights_only=True)
    assert state["global_step"] > 0 and state["RecallDataModule"]["batches_consumed"] == state["global_step"]


BROKEN = {
    "truncated": lambda good, path: path.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2]),
    "corrupted": lambda good, path: path.write_bytes(bytes(b ^ 0x5A for b in good.read_bytes())),
    "foreign": lambda good, path: torch.save({"weights": torch.zeros(3)}, path),
    "missing": lambda good, path: None,
}
BROKEN_MESSAGES = {"truncated": "is not a readable checkpoint", "corrupted": "is not a readable checkpoint",
                   "foreign": "is not a Lightning checkpoint", "missing": "no such file"}


@pytest.fixture(scope="module")
def good_fit(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    root = tmp_path_factory.mktemp("good")
    return icrl("fit", "--config", ORIGIN, *SMALL, *QUIET, "--trainer.max_steps", "3",
                "--trainer.default_root_dir", str(root)), last_ckpt(root)


@pytest.fixture(scope="module")
def good_checkpoint(good_fit) -> Path:
    return good_fit[1]


def test_a_finished_fit_exits_0_with_its_checkpoint_and_every_scalar_in_scalars_csv(good_fit):
    proc, ckpt = good_fit
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"icrl: checkpoint at step 3: {ckpt}" in proc.stderr.splitlines() and "Traceback" not in proc.stderr
    assert "Tip" not in proc.stderr and "Seed set" not in proc.stderr  # Lightning's stray lines
    watch = shlex.split(proc.stderr.partition("(watch with: ")[2].partition(")")[0])
    assert Path(watch[0]).is_file() and os.access(watch[0], os.X_OK) and watch[1:] == ["--logdir", str(ckpt.parents[2])]
    # scalars.csv, beside TensorBoard's event files in the log folder: the same scalars, to float32
    scalars, events = read_scalars(ckpt.parents[1]), val_scalars(ckpt.parents[1], prefix="")
    assert scalars.keys() == events.keys() and {"val/loss", "train/loss"} <= scalars.keys()
    assert "epoch" not in scalars  # Lightning's count of passes over an endless stream: always 0
    for tag, (step, value) in events.items():
        assert (scalars[tag][0][-1], scalars[tag][1][-1]) == (step, pytest.approx(value, rel=1e-6)), tag


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("icrl: error:")]


@pytest.mark.parametrize("command, fault", [*(("fit", fault) for fault in BROKEN), ("validate", "truncated")])
def test_broken_checkpoint_is_one_line_naming_the_file(command, fault, good_checkpoint, run_cli, capsys, tmp_path):
    path = tmp_path / "run.ckpt"
    BROKEN[fault](good_checkpoint, path)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(command, "--config", ORIGIN, *SMALL, "--ckpt_path", str(path))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert errors == error_lines(err)[:1] and f"ckpt_path='{path}'" in errors[0] and BROKEN_MESSAGES[fault] in errors[0]
    assert "Traceback" not in err and not (tmp_path / "lightning_logs").exists()


MISMATCHES = {
    "batch size": (["--data.batch_size", "16"], "data.batch_size=8 there, 16 here"),
    "data config": (["--data.alpha", "0.3"], "data.alpha=0.2 there, 0.3 here"),
    "data seed": (["--data.seed", "1"], "data.seed=0 there, 1 here"),
    "model": (["--model.d_model", "256"], "model.d_model=128 there, 256 here"),
    "gradient accumulation": (["--trainer.accumulate_grad_batches", "2"], "accumulate_grad_batches=1 there, 2 here"),
}


@pytest.mark.parametrize("case", list(MISMATCHES))
def test_resume_under_other_settings_is_refused_before_step_0(case, run_cli, good_checkpoint, capsys, tmp_path):
    args, message = MISMATCHES[case]
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(good_checkpoint.read_bytes())
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", ORIGIN, *SMALL, *args, "--trainer.max_steps", "6", "--ckpt_path", str(ckpt))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"cannot resume from '{ckpt}'" in err and message in err and "Traceback" not in err
    assert ckpt.read_bytes() == good_checkpoint.read_bytes()  # nothing trained, nothing written
    # a performance-only setting may change: the stream is the same for any number of workers
    run_cli("fit", "--config", ORIGIN, *SMALL, "--data.val_batch_size", "16", "--trainer.max_steps", "4",
            "--ckpt_path", str(ckpt))


def test_resume_under_another_world_size_is_refused(good_checkpoint):
    # the entries' names in checkpoints written before the renames (RunCheckpoint → LastCheckpoint), so they resume
    assert SIGNATURE_KEY == "icrl_run" and "RunCheckpoint" in load_checkpoint(good_checkpoint)["callbacks"]
    signature = {k: v for k, v in load_checkpoint(good_checkpoint)[SIGNATURE_KEY].items()
                 if k not in ("world_size", "accumulate_grad_batches")}
    check_resume(good_checkpoint, signature, 1, 1)
    with pytest.raises(ValueError, match="world_size=1 there, 2 here"):
        check_resume(good_checkpoint, signature, 2, 1)


def test_setup_error_under_ddp_is_one_line(tmp_path):
    # each of 2 processes validates a share of n_val = 1 prompts: found in the data module's setup
    proc = icrl("fit", "--config", ORIGIN, *SMALL, *QUIET, "--data.n_val", "1", "--trainer.accelerator", "cpu",
                "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.default_root_dir", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.count("icrl: error: n_val must be >= the number of processes = 2") == 1
    assert "Traceback" not in proc.stderr and not list(tmp_path.rglob("events.*"))


MISSING = "mps" if torch.cuda.is_available() else "gpu"  # an accelerator this machine lacks
BAD = {
    "negative max_steps": (["--trainer.max_steps", "-5"], "`max_steps` must be a non-negative integer or -1"),
    "no such accelerator": (["--trainer.accelerator", MISSING], f"trainer.accelerator={MISSING!r} cannot run here"),
    "batch beyond memory": (["--data.batch_size", "100000000"], "data.batch_size=100000000: one training batch takes"),
    "mistyped option": (["--data.alpah", "0.5"], "Option 'alpah' is not accepted by icrl.recall.RecallDataModule "
                                                 "(--data.alpah); did you mean alpha?"),
    "top-level optimizer": (["--optimizer", "Adam"], "the optimizer is the model's setting"),
    "bad checkpoint interval": (["--checkpoint_every_n_steps", "0"], "checkpoint_every_n_steps must be >= 1 or null"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_setting_is_one_line_and_writes_nothing(case, run_cli, capsys, tmp_path):
    args, message = BAD[case]
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", ORIGIN, *args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    lines = error_lines(err)
    assert len(lines) == 1 and message in lines[0], err[-2000:]
    assert "Traceback" not in err and "usage:" not in err
    assert not list(tmp_path.iterdir())  # no run folder, no checkpoint


def test_bad_setting_exits_2_from_the_command_line_in_one_line(tmp_path):
    # a value refused by a constructor: found after the seed is set, and still the one line on stderr
    proc = icrl("fit", "--config", ORIGIN, *QUIET, "--data.alpha", "1.5", "--trainer.default_root_dir", str(tmp_path))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.splitlines() == ["icrl: error: alpha must lie in [0, 1) (0 = noiseless task), got alpha=1.5"]
    assert not list(tmp_path.iterdir())


CONFIG_ERRORS = {  # a second config file, its text, and the one line
    "YAML syntax": ("trainer:\n  max_steps: [1\n", "--config {path}, line 3, column 1: not valid YAML: expected ','"),
    "unknown key": ("trainer:\n  max_step: 10\n",
                    "--config {path}, line 2: 'trainer.max_step' is not a setting of icrl fit; did you mean trainer.max_steps?"),
    "dotted unknown key": ("data:\n  init_args:\n    alpha: 0.5\ntrainer.max_step: 10\n",
                           "--config {path}, line 4: 'trainer.max_step' is not a setting of icrl fit; did you mean"),
}


@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
def test_config_file_errors_name_the_file_and_line(case, run_cli, capsys, tmp_path):
    text, message = CONFIG_ERRORS[case]
    path = tmp_path / "second.yaml"
    path.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", ORIGIN, "--config", str(path))
    lines = error_lines(capsys.readouterr().err)
    assert exit_info.value.code == 2 and len(lines) == 1 and message.format(path=path) in lines[0], lines


def test_an_abbreviated_option_is_refused(run_cli, capsys):
    # argparse would take --trainer.max_step for --trainer.max_steps
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", ORIGIN, "--trainer.max_step", "3")
    assert exit_info.value.code == 2 and error_lines(capsys.readouterr().err) == [
        "icrl: error: 'trainer.max_step' is not a setting of icrl fit; did you mean trainer.max_steps?"]


OUT_OF_MEMORY = """
from lightning.pytorch import Callback

class Allocate(Callback):
    def __init__(self, error: str):
        self.error = error
    def on_train_start(self, trainer, pl_module):
        raise {"MemoryError": MemoryError, "RuntimeError": RuntimeError}[self.error](
            "DefaultCPUAllocator: can't allocate memory: you tried to allocate 800000000000 bytes")
"""


@pytest.mark.parametrize("error", ["RuntimeError", "MemoryError"])
def test_out_of_memory_before_the_first_step_is_a_setting_naming_the_batch_sizes(error, run_cli, capsys, tmp_path,
                                                                                monkeypatch):
    (tmp_path / "alloc_ext.py").write_text(OUT_OF_MEMORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", ORIGIN, *SMALL, "--trainer.callbacks+=alloc_ext.Allocate",
                f"--trainer.callbacks.error={error}")
    assert exit_info.value.code == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith(f"icrl: error: out of memory before the first step ({error}: "
                                                   "DefaultCPUAllocator: can't allocate memory")
    assert "the batches do not fit this machine: lower them (data.batch_size=8" in lines[0]
    assert not [p for p in (tmp_path / "lightning_logs").rglob("*") if p.is_file()]  # the run's folder is gone


def test_tensorboard_gets_the_hparams_and_validate_stays_in_the_run_folder(run_cli, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = run_cli("fit", "--config", ORIGIN, *SMALL, "--trainer.max_steps", "4")
        log_dir = Path(cli.trainer.logger.log_dir)
        run_cli("fit", "--config", ORIGIN, *SMALL, "--trainer.max_steps", "6", "--ckpt_path",
                str(log_dir / "checkpoints" / "last.ckpt"))
        run_cli("validate", "--config", ORIGIN, *SMALL, "--ckpt_path", str(log_dir / "checkpoints" / "last.ckpt"))
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]
    assert [p.name for p in log_dir.parent.iterdir()] == ["version_0"]
    assert (log_dir / "validate-config.yaml").is_file() and "max_steps: 6" in (log_dir / "config.yaml").read_text()
    hparams_yaml = (log_dir / "hparams.yaml").read_text()
    assert "model.optimizer.class_path: icrl.optim.NormalizedGD" in hparams_yaml
    assert "model.attention.class_path: icrl.recall.LinearAttention" in hparams_yaml
    # scalars.csv, beside TensorBoard's events: the fit's, its resume's and the validation's (logged at step 0)
    scalars = read_scalars(log_dir)
    assert scalars["val/loss"][0] == [0, 3, 5] and scalars["train/loss"][0][-1] == 5
    assert val_scalars(log_dir)["val/loss"] == (0, pytest.approx(scalars["val/loss"][1][0], rel=1e-6))

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    values = {k: v.string_value or v.number_value for k, v in session.hparams.items()}
    assert values["model.optimizer.lr"] == pytest.approx(0.1) and values["model.attention.class_path"] == "icrl.recall.LinearAttention"
    assert values["model.optimizer.class_path"] == "icrl.optim.NormalizedGD" and values["data.alpha"] == 0.2
    assert "_hparams_/experiment" not in content  # see the next test


def test_hparams_tab_shows_each_familys_settings_from_one_logdir(run_cli, tmp_path):
    # no run writes an experiment summary, so TensorBoard builds the tab's columns from every run's settings
    # (with one, it shows the first run's columns only: a regression run hid data.alpha)
    run_cli("fit", "--config", ORIGIN, *SMALL, "--trainer.max_steps", "2")
    run_cli("fit", "--config", str(ROOT / "configs" / "regression" / "fig2-1layer.yaml"), "--trainer.max_steps", "2",
            "--data.n_tokens", "12", "--data.n_labelled", "4", "--data.token_dim", "6", "--data.n_basis", "3",
            "--data.batch_size", "8", "--data.n_val", "24", "--model.heads", "4")
    runs = {}
    for events in (tmp_path / "lightning_logs").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events.parent))
        acc.Reload()
        runs[str(events.parent)] = acc.PluginTagToContent("hparams")
    assert len(runs) == 2 and not any("_hparams_/experiment" in tags for tags in runs.values())
    columns = {info.name for info in backend_context.Context.__new__(backend_context.Context)._compute_hparam_infos(runs)}
    assert {"data.alpha", "model.attention.class_path", "model.heads", "data.n_labelled"} <= columns


def test_help_names_the_modules_and_takes_short_class_names(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--model.help", "RecallModule"])
    assert exit_info.value.code == 0 and "--model.d_model" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["fit", "--help"])
    out = capsys.readouterr().out
    assert "icrl.recall.RecallModule" in out and "icrl.regression.TemplateRegressionDataModule" in out
    assert "--optimizer" not in out.replace("--model.optimizer", "")  # one place for the optimizer: the model


SIDE_EFFECTS = """
import os, warnings, lightning.pytorch.cli, torchmetrics, torch.utils.tensorboard.summary
n = len(warnings.filters)  # the libraries icrl uses install filters of their own on import: count after them
import icrl.cli, icrl.streams, icrl.recall, icrl.regression
imported = len(warnings.filters) - n
icrl.cli.cli_main(["fit", "--config", {config!r}, *{args!r}])
ours = [f for f in warnings.filters if f[1] is not None and re.search("IterableDataset|LeafSpec", f[1].pattern)]
print(imported, len(ours))
"""


def test_no_process_wide_side_effects(tmp_path):
    args = [*SMALL, *QUIET, "--trainer.max_steps", "2", "--trainer.default_root_dir", str(tmp_path)]
    proc = subprocess.run([sys.executable, "-c", "import re" + SIDE_EFFECTS.format(config=ORIGIN, args=args)],
                          capture_output=True, text=True, timeout=120, env=ENV)
    assert proc.stdout.split()[-2:] == ["0", "0"], proc.stderr[-2000:]


def test_stream_keys_do_not_collide():
    # SeedSequence pads short entropy with zeros: keyed by the entries alone these pairs would be equal
    for short, padded in [((7, 1), (7, 1, 0, 0)), ((7,), (7, 0, 0, 0)), ((0,), ()), ((1 << 32,), (0, 1))]:
        a, b = torch.rand(4, generator=generator(*short)), torch.rand(4, generator=generator(*padded))
        assert not torch.equal(a, b), (short, padded)
    with pytest.raises(ValueError, match="stream keys must be integers in"):
        generator(-1)


def test_the_bar_counts_steps_and_a_resumed_bar_goes_on_from_its_step(tmp_path):
    args = ["fit", "--config", ORIGIN, *SMALL, "--trainer.default_root_dir", str(tmp_path),
            "--trainer.enable_model_summary", "false"]
    cli_main([*args, "--trainer.max_steps", "4"])
    cli = cli_main([*args, "--trainer.max_steps", "9", "--ckpt_path", str(last_ckpt(tmp_path))])
    bar = next(c for c in cli.trainer.callbacks if isinstance(c, StepProgressBar)).train_progress_bar
    assert (bar.initial, bar.n, bar.total, bar.desc) == (4, 9, 9, "Training: ")  # the rate counts this run's 5 steps
    assert bar.postfix.startswith("v_num=0,")  # not "on_0", the end of "version_0"


def test_finite_sample_training_counts_its_epochs(run_cli):
    # 64 fixed prompts, batch 8: an epoch is 8 steps; 12 steps are 1.5 epochs (a stream logs no epoch)
    cli = run_cli("fit", "--config", str(ROOT / "configs" / "recall" / "finite" / "origin-linear-fa.yaml"), *SMALL,
                  "--data.n_samples", "64", "--trainer.max_steps", "12", "--trainer.log_every_n_steps", "4")
    assert cli.datamodule.steps_per_epoch == 8
    steps, epochs, _ = read_scalars(cli.trainer.log_dir)["train/epoch"]
    assert steps == [3, 7, 11] and epochs == [0.5, 1.0, 1.5]
    assert StepProgressBar._describe(cli.trainer) == "Epoch 1"
