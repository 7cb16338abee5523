"""``icrl sweep --ensemble K`` (icrl/ensemble.py): each member is its single run, file for file, in both families;
a member's checkpoint resumes and tests as a single run's; a non-finite member fails alone; how jobs are grouped."""

import csv
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import ROOT
from icrl.scalars import read_scalars
from icrl.sweep import main
from icrl.sweep.job import ensembles, members_of

TOL = 1e-6
RECALL = {"data.context_length": 16, "data.batch_size": 8, "data.n_val": 64, "data.val_batch_size": 64,
          "trainer.max_steps": 40, "trainer.val_check_interval": 20, "trainer.log_every_n_steps": 5,
          "checkpoint_every_n_steps": 10}
REGRESSION = {"data.n_tokens": 12, "data.n_labelled": 4, "data.token_dim": 6, "data.n_basis": 3, "data.noise_var": 0.1,
              "data.batch_size": 8, "data.n_train": 64, "data.n_val": 24, "model.heads": 4, "model.beta": 0.3,
              "model.lr_drop_step": 15, "trainer.max_steps": 30, "trainer.val_check_interval": 10,
              "trainer.log_every_n_steps": 5, "checkpoint_every_n_steps": 10}
SWEEPS = {  # a stackable recall model, a finite-sample one (epochs, ReLU), a regression model with a schedule,
    # and a GPU's path on the CPU: each member draws its batches where it trains (on_after_batch_transfer)
    "recall-origin": ("recall/fig1/origin-linear-fa.yaml", RECALL, {"data.alpha": [0.0, 0.5]}),
    "recall-finite-relu": ("recall/finite/reparam-relu-fa.yaml", {**RECALL, "data.n_samples": 32},
                           {"data.alpha": [0.2, 0.5]}),
    "regression-one-layer": ("regression/fig2-1layer.yaml", REGRESSION, {"model.optimizer.lr": [0.01, 0.003]}),
    "recall-device-sampling": ("recall/fig1/reparam-softmax-fa.yaml", {**RECALL, "data.device_sampling": True},
                               {"data.alpha": [0.0, 0.5]}),
}


def sweep_file(tmp_path: Path, config: str, settings: dict, grid: dict, **extra) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"config": str(ROOT / "configs" / config), "set": settings, "grid": grid,
                                    "seeds": [0, 1], **extra}))
    return path


def close(a, b, where: str) -> None:
    """Equal structures, numbers (and tensors) to ``TOL``."""
    if isinstance(a, torch.Tensor):
        assert a.shape == b.shape and torch.allclose(a.double(), b.double(), atol=TOL, rtol=TOL), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and not math.isnan(a):
        assert math.isclose(a, b, rel_tol=TOL, abs_tol=TOL), (where, a, b)
    else:
        assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), (where, a, b)


def same_run(single: Path, member: Path) -> None:
    """A member's folder holds what its single run's does, to ``TOL``, the folder's own path aside."""
    files = sorted(p.relative_to(single) for p in single.rglob("*") if p.is_file() and "events" not in p.name)
    assert files == sorted(p.relative_to(member) for p in member.rglob("*") if p.is_file() and "events" not in p.name)
    for name in (n for n in files if n.suffix == ".yaml"):  # config.yaml, hparams.yaml
        assert (single / name).read_text().replace(str(single), "RUN") == \
            (member / name).read_text().replace(str(member), "RUN"), name
    close(*({tag: series[:2] for tag, series in read_scalars(d).items()} for d in (single, member)), "scalars")
    a, b = (torch.load(next(d.rglob("last.ckpt")), weights_only=True) for d in (single, member))
    for key in ("loops", "callbacks"):  # validation batch counts (the ensemble's are K times more) and paths
        a.pop(key), b.pop(key)
    close(a, b, "last.ckpt")
    events = [EventAccumulator(str(next(d.rglob("events.out.*")))).Reload() for d in (single, member)]
    assert events[0].Tags()["scalars"] == events[1].Tags()["scalars"]
    for tag in events[0].Tags()["scalars"]:
        close([(e.step, e.value) for e in events[0].Scalars(tag)], [(e.step, e.value) for e in events[1].Scalars(tag)],
              tag)


@pytest.mark.parametrize("name", list(SWEEPS))
def test_each_member_is_its_single_run(name, tmp_path):
    sweep = sweep_file(tmp_path, *SWEEPS[name])
    for out, k in (("single", "1"), ("ensemble", "4")):
        main([str(sweep), "--out", str(tmp_path / out), "--no-progress", "--ensemble", k])
    singles = sorted((tmp_path / "single" / "runs").glob("*/*"))
    assert len(singles) == 4
    for single in singles:
        member = tmp_path / "ensemble" / single.relative_to(tmp_path / "single")
        assert "(trained in an ensemble of 4)" in (member / "log.txt").read_text()
        close(*(yaml.safe_load((d / "result.json").read_text())["exit_code"] for d in (single, member)), "exit")
        same_run(single, member)
    rows = [list(csv.reader((tmp_path / out / "summary.csv").open())) for out in ("single", "ensemble")]
    close(*([[float(x) if x else x for x in r[2:]] for r in rs[1:]] for rs in rows), "summary")


def test_a_members_checkpoint_resumes_and_tests_as_a_single_run(tmp_path, run_cli):
    config, settings, _ = SWEEPS["recall-origin"]
    sweep = sweep_file(tmp_path, config, settings, {"data.alpha": [0.5]})
    main([str(sweep), "--out", str(tmp_path / "out"), "--no-progress", "--ensemble", "2"])
    member = next((tmp_path / "out" / "runs").glob("*/seed1-*"))
    ckpt = next(member.rglob("last.ckpt"))
    args = ["--config", str(ROOT / "configs" / config), "--seed_everything", "1", "--data.seed", "1",
            "--data.alpha", "0.5", *(f"--{k}={v}" for k, v in settings.items() if k != "trainer.max_steps")]
    resumed = run_cli("fit", *args, "--trainer.max_steps", "60", "--ckpt_path", str(ckpt))
    assert resumed.trainer.global_step == 60 and Path(resumed.trainer.logger.log_dir) == ckpt.parents[1]
    whole = run_cli("fit", *args, "--trainer.max_steps", "60")
    close(dict(resumed.model.state_dict()), dict(whole.model.state_dict()), "weights after 60 steps")
    tested = run_cli("test", *args, "--ckpt_path", str(ckpt))
    assert tested.trainer.callback_metrics["test/loss"] > 0


def test_a_non_finite_member_fails_alone(tmp_path, capsys):
    # plain SGD at lr 1e38 overflows the Origin model's logits; the lr is a member setting: one ensemble
    config, settings, _ = SWEEPS["recall-origin"]
    sweep = sweep_file(tmp_path, config, settings, {"model.init_args.optimizer.init_args.lr": [1e38, 0.1]},
                       args=["--model.init_args.optimizer", "torch.optim.SGD"])
    with pytest.raises(SystemExit) as exit_info:
        main([str(sweep), "--out", str(tmp_path / "out"), "--no-progress", "--ensemble", "4"])
    assert str(exit_info.value.code).startswith("icrl sweep: 2 run(s) failed")
    results = {d.parent.name + "/" + d.name: yaml.safe_load((d / "result.json").read_text())
               for d in (tmp_path / "out" / "runs").glob("*/*")}
    assert sorted((k.split("/")[0], r["exit_code"]) for k, r in results.items()) == [
        ("lr=0.1", 0), ("lr=0.1", 0), ("lr=1e+38", 1), ("lr=1e+38", 1)]
    for key, result in results.items():
        log = Path(result["log"]).read_text()
        assert "(trained in an ensemble of 4)" in log
        assert ("train/loss = nan" in log and "lower the optimizer's lr" in log) == key.startswith("lr=1e+38")
        assert key.startswith("lr=1e+38") or read_scalars(Path(result["dir"]))["val/loss"][0][-1] == 39  # 40th step


def test_jobs_are_grouped_by_architecture_and_step(tmp_path):
    def job(key: str, ensemble: str | None) -> dict:
        return {"key": key, "dir": str(tmp_path / key), "ensemble": ensemble, "seed": 0, "gpus": 0, "threads": 1}

    todo = [job("a1", "A"), job("b1", "B"), job("a2", "A"), job("a3", "A"), job("c", None), job("a4", "A"),
            job("a5", "A")]
    units = ensembles(todo, 3)
    assert [[m["key"] for m in u["members"]] if "members" in u else u["key"] for u in units] == [
        ["a1", "a3", "a5"], ["a2", "a4"], "b1", "c"]  # at most 3, as even as can be; alone where no partner
    assert units[0]["key"] == "a1+a3+a5" and units[0]["dir"] == str(tmp_path / "a1")
    failed = {**units[1], "exit_code": 1, "error": "worker died", "wall_s": 2.0}
    assert [(r["key"], r["exit_code"], r["log"]) for r in members_of(failed)] == [
        ("a2", 1, f"{tmp_path / 'a2'}/log.txt"), ("a4", 1, f"{tmp_path / 'a4'}/log.txt")]


@pytest.mark.parametrize("ensemble", ["1", "4"], ids=["runs one by one", "one ensemble"])
def test_a_sweep_training_in_its_own_process_stops_and_resumes(ensemble, tmp_path):
    """``--jobs 1`` trains in the sweep's own process, where the fit's handler takes the signal: the sweep stops
    too (no run starts after it), and ``--reuse`` resumes to the uninterrupted sweep's summary."""
    config, settings, grid = SWEEPS["recall-origin"]
    sweep = sweep_file(tmp_path, config, {**settings, "trainer.max_steps": 600, "trainer.val_check_interval": 200,
                                          "checkpoint_every_n_steps": 25}, grid)
    main([str(sweep), "--out", str(tmp_path / "whole"), "--no-progress"])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "icrl", "sweep", str(sweep), "--out", str(out), "--no-progress", "--ensemble", ensemble]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not list(out.glob("runs/*/*/lightning_logs/**/last.ckpt")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    kept = re.search(r"icrl sweep: stopped by SIGTERM: (\d) of 4 runs finished, (\d) stopped with a checkpoint; "
                     r"continue with: .* --reuse$", err.strip().splitlines()[-1])
    assert kept and int(kept[1]) < 4 and int(kept[1]) + int(kept[2]) <= 4 and not (out / "summary.csv").exists(), err
    if ensemble == "4":  # stopped together, each with its checkpoint
        assert kept.groups() == ("0", "4"), err
    main([str(sweep), "--out", str(out), "--no-progress", "--ensemble", ensemble, "--reuse"])
    assert (out / "summary.csv").read_bytes() == (tmp_path / "whole" / "summary.csv").read_bytes()
    assert all(len(list(d.glob("lightning_logs/**/version_*"))) == 1 for d in out.glob("runs/*/*"))
