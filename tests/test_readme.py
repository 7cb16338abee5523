"""The README as a newcomer reads it: its extension example runs as printed, the thread default it
states is the one a run gets, and its metric tables name every scalar a run logs."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import ROOT

README = (ROOT / "README.md").read_text()
FIG1 = ROOT / "configs" / "recall" / "fig1" / "reparam-linear-fa.yaml"


def code_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def user_shell(cwd: Path, **env: str) -> dict:
    """A user's shell: the venv's ``icrl`` on PATH, no PYTHONPATH and no thread settings (unless given)."""
    path = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    return dict(cwd=cwd, env={"HOME": os.environ.get("HOME", str(cwd)), "PATH": path, **env},
                capture_output=True, text=True, timeout=300)


def test_extension_example_runs_as_printed_from_the_current_directory(tmp_path):
    module = next(b for b in code_blocks("python") if b.startswith("# my_ext.py"))
    command = next(b for b in code_blocks("bash") if "my_ext." in b).strip()
    (tmp_path / "my_ext.py").write_text(module)
    (tmp_path / "configs").symlink_to(ROOT / "configs")  # the README's commands run in the clone's root
    shrink = (" --data.context_length 32 --data.n_val 64 --trainer.max_steps 4 --trainer.val_check_interval 4"
              " --trainer.enable_progress_bar false --trainer.default_root_dir runs")
    proc = subprocess.run(["bash", "-c", command + shrink], **user_shell(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((tmp_path / "runs").rglob("*.ckpt"))) == 1


THREAD_PROBE = textwrap.dedent('''
    import torch
    from lightning.pytorch import Callback

    class Threads(Callback):
        def on_train_start(self, trainer, pl_module):
            open("threads.txt", "w").write(str(torch.get_num_threads()))
''')


@pytest.mark.parametrize("env, threads", [({}, 1), ({"OMP_NUM_THREADS": "2"}, min(2, os.cpu_count()))],
                         ids=["default", "OMP_NUM_THREADS"])  # torch caps its threads at the cores
def test_runs_get_one_torch_thread_unless_OMP_NUM_THREADS_says_otherwise(tmp_path, env, threads):
    assert "one torch thread" in README and "OMP_NUM_THREADS" in README  # what the README promises
    (tmp_path / "probe.py").write_text(THREAD_PROBE)
    proc = subprocess.run(["icrl", "fit", "--config", str(FIG1), "--trainer.fast_dev_run", "true",
                           "--trainer.callbacks+", "probe.Threads"], **user_shell(tmp_path, **env))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "threads.txt").read_text() == str(threads)


def logged_tags(cli) -> set[str]:
    acc = EventAccumulator(cli.trainer.logger.log_dir)
    acc.Reload()
    return set(acc.Tags()["scalars"])


def test_every_logged_scalar_is_in_the_readme_tables_and_every_documented_one_is_logged(run_cli):
    recall = logged_tags(run_cli(  # α > 0: the noisy task's extra scalars too
        "fit", "--config", str(FIG1), "--data.alpha", "0.5", "--data.context_length", "32", "--data.n_val", "64",
        "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.log_every_n_steps", "1"))
    regression = logged_tags(run_cli(
        "fit", "--config", str(ROOT / "configs/regression/fig2-1layer.yaml"), "--data.n_train", "16",
        "--data.batch_size", "8", "--data.n_val", "8", "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
        "--trainer.log_every_n_steps", "1"))
    rows = [line for line in README.splitlines() if line.startswith("| `")]  # table rows that start with a tag
    documented = {tag for row in rows for tag in re.findall(r"`((?:train|val)/\w+|epoch)`", row)}
    assert recall - documented == set() and regression - documented == set()
    assert documented - recall - regression == set()


def test_commands_that_take_hours_on_a_cpu_say_so_where_they_are_printed():
    # the paper-size 4-layer baseline takes ~27 s a step on 2 cores: a printed command that trains it at that size
    # must say so, and a CPU-sized variant (a smaller model) must stand beside it
    commands = [c for block in code_blocks("bash") for c in block.replace("\\\n", " ").splitlines()
                if re.search(r"icrl fit .*fig2-4layer", c)]
    assert commands
    for command in commands:
        assert "--model.d_model" in command or "GPU job" in command, command
    assert any("--model.d_model" in c for c in commands)
