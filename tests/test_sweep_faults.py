"""``icrl sweep`` under faults, local and Ray: stopped by SIGINT / SIGTERM, killed, a dead worker, a second sweep
on its folder, damaged files. Each resumes with ``--reuse`` to the summary.csv of an uninterrupted sweep, byte for
byte."""

import contextlib
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


@pytest.fixture
def start():
    """Starts ``icrl sweep`` as a user does, in a process group of its own (what a terminal's Ctrl-C reaches); at
    the end kills what is left of the group (a killed Ray sweep's agents)."""
    started = []

    def start(sweep_file: Path, out: Path, *options: str) -> subprocess.Popen:
        if "ray" in options:
            pytest.importorskip("ray", reason="the Ray backend needs ray: pip install -e '.[ray]'")
        started.append(subprocess.Popen([sys.executable, "-m", "icrl", "sweep", str(sweep_file), "--out", str(out),
                                         "--no-progress", "--jobs", "2", *options],
                                        env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        return started[-1]

    yield start
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def wait_for(proc: subprocess.Popen, ready, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the sweep ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def training(out: Path, file: str = "scalars.csv", runs: int = 2):
    return lambda: len(list(out.glob(f"runs/*/*/lightning_logs/**/{file}"))) >= runs


def processes() -> dict[int, tuple[int, int, bytes]]:
    """Every live process (not a zombie): ``{pid: (parent, process group, command line)}``."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            state, ppid, pgrp = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:3]
            if state != "Z":
                found[int(proc.name)] = int(ppid), int(pgrp), (proc / "cmdline").read_bytes().rstrip(b"\0")
        except (ValueError, OSError):
            continue
    return found


def workers(sweep: int) -> list[int]:
    """The processes training the sweep's runs: its local workers (spawned children), or the Ray workers running
    a task (children of its local Ray instance's raylet)."""
    table, tree, found = processes(), [sweep], []
    for pid in tree:  # breadth first: the sweep's descendants
        tree += [child for child, (ppid, _, _) in table.items() if ppid == pid]
        if pid != sweep and (b"spawn_main" in table[pid][2] or table[pid][2].startswith(b"ray::_ray_train")):
            found.append(pid)
    return found


def files(out: Path) -> set[tuple[Path, int, int]]:
    return {(f, f.stat().st_size, f.stat().st_mtime_ns) for f in out.rglob("*") if f.is_file()}


def resume_matches(sweep_file: Path, out: Path, uninterrupted: Path, start=None) -> None:
    """``--reuse`` finishes the sweep to the uninterrupted summary, each run logging into one version folder: in this
    process (local), or with ``start`` as a Ray sweep."""
    if start is None:
        main([str(sweep_file), "--out", str(out), "--no-progress", "--reuse"])
    else:
        proc = start(sweep_file, out, "--backend", "ray", "--reuse")
        assert proc.communicate(timeout=240) and proc.returncode == 0, proc.stderr
    assert (out / "summary.csv").read_bytes() == (uninterrupted / "summary.csv").read_bytes()
    for result in out.glob("runs/*/*/result.json"):
        assert len(list(result.parent.glob("lightning_logs/**/version_*"))) == 1, result.parent


@pytest.mark.parametrize("signum, whom, backend", [
    (signal.SIGINT, "group", "local"), (signal.SIGTERM, "sweep", "local"), (signal.SIGINT, "group", "ray"),
    (signal.SIGTERM, "sweep", "ray")], ids=["Ctrl-C", "SIGTERM to the sweep", "Ctrl-C to a Ray sweep",
                                            "SIGTERM to a Ray sweep"])
def test_stopped_sweep_checkpoints_and_resumes(sweep_file, uninterrupted, tmp_path, capsys, start, signum, whom,
                                               backend):
    out = tmp_path / "out"
    proc = start(sweep_file, out, "--backend", backend)
    wait_for(proc, training(out), "two runs training")
    with pytest.raises(SystemExit) as second:  # --out is locked while the first sweep runs
        main([str(sweep_file), "--out", str(out), "--no-progress"])
    assert second.value.code == 2
    assert f"{out} is in use by another sweep (it holds {out / '.lock'})" in capsys.readouterr().err
    (os.killpg if whom == "group" else os.kill)(proc.pid, signum)  # Ctrl-C: no worker, local or Ray, is in the group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    line = err.strip().splitlines()[-1]
    name = signal.Signals(signum).name
    kept = re.fullmatch(rf"icrl sweep: stopped by {name}: (\d) of 4 runs finished, (\d) stopped with a checkpoint; .*",
                        line)
    assert kept and int(kept[2]) >= 1, err  # the runs in flight: the second may have been between two steps or runs
    assert line.endswith(f"continue with: icrl sweep {sweep_file} --out {out} --no-progress --jobs 2 "
                         f"--backend {backend} --reuse")
    assert "Traceback" not in err and not (out / "summary.csv").exists()
    assert len(list(out.glob("runs/*/*/lightning_logs/**/last.ckpt"))) >= int(kept[1]) + int(kept[2])
    resume_matches(sweep_file, out, uninterrupted)


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_killed_sweep_resumes(sweep_file, uninterrupted, tmp_path, start, backend):
    out = tmp_path / "out"
    proc = start(sweep_file, out, "--backend", backend)
    # both past their first checkpoint: a run killed before it restarts from step 0, in a second log folder
    wait_for(proc, training(out, "last.ckpt"), "two checkpoints")
    pool = workers(proc.pid)
    assert len(pool) == 2
    os.kill(proc.pid, signal.SIGKILL)  # the sweep alone: its workers (Ray's: its raylet dies with it) notice and stop
    proc.communicate()
    deadline = time.monotonic() + 10
    while set(pool) & processes().keys():
        assert time.monotonic() < deadline, "the workers of a killed sweep live on"
        time.sleep(0.1)
    before = files(out)
    time.sleep(1)
    assert files(out) == before, "a process of the killed sweep writes into --out"
    # left of a Ray sweep: Ray's two agents, idle, which exit 60 s later (Ray's timeout to report the raylet's
    # death to the dead GCS); the fixture kills them
    left = {cmd for _, group, cmd in processes().values() if group == proc.pid}
    assert left <= ({b"ray::DashboardAgent", b"ray::RuntimeEnvAgent"} if backend == "ray" else set()), left
    resume_matches(sweep_file, out, uninterrupted, start if backend == "ray" else None)


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_dead_worker_fails_its_run_alone(sweep_file, uninterrupted, tmp_path, start, backend):
    out = tmp_path / "out"
    proc = start(sweep_file, out, "--backend", backend)
    wait_for(proc, training(out, "last.ckpt"), "two checkpoints")  # as above
    os.kill(workers(proc.pid)[0], signal.SIGKILL)  # on Ray: not retried, as on local
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert err.strip().splitlines()[-1].startswith("icrl sweep: 1 run(s) failed"), err
    md = (out / "summary.md").read_text()
    assert "Failed runs (1)" in md and "| -1 |" in md  # -1: its worker died
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
