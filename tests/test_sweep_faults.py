"""``icrl sweep`` under faults: stopped by SIGINT / SIGTERM, killed, a dead worker, a second sweep on its
folder, damaged files. Each resumes with ``--reuse`` to the summary.csv of an uninterrupted sweep, byte for byte."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from icrl.sweep import main

BASE = ROOT / "configs" / "recall" / "fig1" / "reparam-linear-fa.yaml"
# 4 runs of 1000 tiny steps, validated every 250, a checkpoint every 50: long enough to be stopped in flight
# on a loaded machine too (the second sweep's lock check below takes seconds)
SWEEP = {"config": str(BASE), "grid": {"data.alpha": [0.0, 0.5]}, "seeds": [0, 1],
         "set": {"data.context_length": 16, "data.batch_size": 8, "data.n_val": 64, "data.val_batch_size": 64,
                 "trainer.max_steps": 1000, "trainer.val_check_interval": 250, "trainer.log_every_n_steps": 1,
                 "checkpoint_every_n_steps": 50}}


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sweep") / "sweep.yaml"
    path.write_text(yaml.safe_dump(SWEEP))
    return path


@pytest.fixture(scope="module")
def uninterrupted(sweep_file) -> Path:
    """The output folder of the sweep run without a fault (in this process, one run at a time)."""
    out = sweep_file.parent / "uninterrupted"
    main([str(sweep_file), "--out", str(out), "--no-progress"])
    return out


def start(sweep_file: Path, out: Path, *options: str) -> subprocess.Popen:
    """``icrl sweep`` as a user starts it, in a process group of its own (what a terminal's Ctrl-C reaches)."""
    return subprocess.Popen([sys.executable, "-m", "icrl", "sweep", str(sweep_file), "--out", str(out), "--no-progress",
                             "--jobs", "2", *options], env={**os.environ, "OMP_NUM_THREADS": "1"},
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(proc: subprocess.Popen, ready, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the sweep ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def training(out: Path, runs: int = 2):
    return lambda: len(list(out.glob("runs/*/*/lightning_logs/**/scalars.csv"))) >= runs


def workers(sweep: int) -> list[int]:
    """The sweep's worker processes (its spawned children)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == sweep and b"spawn_main" in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except (ValueError, OSError, IndexError):
            continue
    return found


def gone(pids: list[int]) -> bool:
    return not any(Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
                   for pid in pids)


def resume_matches(sweep_file: Path, out: Path, uninterrupted: Path) -> None:
    """``--reuse`` finishes the sweep to the uninterrupted summary, each run logging into one version folder."""
    main([str(sweep_file), "--out", str(out), "--no-progress", "--reuse"])
    assert (out / "summary.csv").read_bytes() == (uninterrupted / "summary.csv").read_bytes()
    for result in out.glob("runs/*/*/result.json"):
        assert len(list(result.parent.glob("lightning_logs/**/version_*"))) == 1, result.parent


@pytest.mark.parametrize("signum, whom, backend", [(signal.SIGINT, "group", "local"), (signal.SIGTERM, "sweep", "local"),
                                                   (signal.SIGTERM, "sweep", "ray")],
                         ids=["Ctrl-C", "SIGTERM to the sweep", "SIGTERM to a Ray sweep"])
def test_stopped_sweep_checkpoints_and_resumes(sweep_file, uninterrupted, tmp_path, capsys, signum, whom, backend):
    if backend == "ray":
        pytest.importorskip("ray", reason="the Ray backend needs ray: pip install -e '.[ray]'")
    out = tmp_path / "out"
    proc = start(sweep_file, out, "--backend", backend)
    wait_for(proc, training(out), "two runs training")
    with pytest.raises(SystemExit) as second:  # --out is locked while the first sweep runs
        main([str(sweep_file), "--out", str(out), "--no-progress"])
    assert second.value.code == 2
    assert f"{out} is in use by another sweep (it holds {out / '.lock'})" in capsys.readouterr().err
    (os.killpg if whom == "group" else os.kill)(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    line = err.strip().splitlines()[-1]
    name = signal.Signals(signum).name
    kept = re.fullmatch(rf"icrl sweep: stopped by {name}: (\d) of 4 runs finished, (\d) stopped with a checkpoint; .*", line)
    assert kept and int(kept[2]) >= 1, err  # the runs in flight: the second may have been between two steps or runs
    assert line.endswith(f"continue with: icrl sweep {sweep_file} --out {out} --no-progress --jobs 2 --backend {backend} "
                         "--reuse")
    assert "Traceback" not in err and not (out / "summary.csv").exists()
    assert len(list(out.glob("runs/*/*/lightning_logs/**/last.ckpt"))) >= int(kept[1]) + int(kept[2])
    resume_matches(sweep_file, out, uninterrupted)


def test_killed_sweep_resumes(sweep_file, uninterrupted, tmp_path):
    out = tmp_path / "out"
    proc = start(sweep_file, out)
    wait_for(proc, training(out), "two runs training")
    pool = workers(proc.pid)
    assert len(pool) == 2
    os.kill(proc.pid, signal.SIGKILL)  # the sweep alone: its workers notice and stop within a second
    proc.communicate()
    deadline = time.monotonic() + 10
    while not gone(pool):
        assert time.monotonic() < deadline, "the workers of a killed sweep live on"
        time.sleep(0.1)
    resume_matches(sweep_file, out, uninterrupted)


def test_dead_worker_fails_its_run_alone(sweep_file, uninterrupted, tmp_path):
    out = tmp_path / "out"
    proc = start(sweep_file, out)
    wait_for(proc, lambda: list(out.glob("runs/*/*/lightning_logs/**/last.ckpt")), "a checkpoint")
    os.kill(workers(proc.pid)[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "FAILED" not in err.split("run(s) failed")[0] or "worker died" not in err, err
    assert err.strip().splitlines()[-1].startswith("icrl sweep: 1 run(s) failed"), err
    md = (out / "summary.md").read_text()
    assert "Failed runs (1)" in md and "| -1 |" in md
    resume_matches(sweep_file, out, uninterrupted)


def test_damaged_files_make_their_run_unfinished(sweep_file, uninterrupted, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(uninterrupted, out)
    result, scalars = sorted(out.glob("runs/*/*/result.json"))[:2]
    result.write_text(result.read_text()[:40])  # a write cut short
    csv_file = next(scalars.parent.glob("lightning_logs/**/scalars.csv"))
    csv_file.write_text(csv_file.read_text() + "val/loss,3\n")
    resume_matches(sweep_file, out, uninterrupted)
    err = capsys.readouterr().err
    assert f"icrl sweep: {result} is damaged (Unterminated string" in err
    assert f"icrl sweep: {csv_file} is damaged (a malformed row" in err and "trained again from step 0" in err
