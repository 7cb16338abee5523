"""``icrl sweep``: the YAML, content keys, reuse and resume, failures, DDP runs, and local vs Ray."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from icrl.scalars import read_scalars
from icrl.sweep import backends, main, plan_sweep, run_sweep
from icrl.sweep.grid import Point, grid_points, load
from icrl.sweep.job import fit_args, plan_job, resolve, train_job

BASE = ROOT / "configs" / "recall" / "fig1" / "reparam-linear-fa.yaml"
TINY = {"data.context_length": 16, "data.batch_size": 8, "data.n_val": 64, "data.val_batch_size": 64,
        "trainer.max_steps": 5, "trainer.val_check_interval": 5, "trainer.log_every_n_steps": 1}
ALPHAS = {"data.alpha": [0.0, 0.5, 0.8]}


def write_sweep(path: Path, config: Path = BASE, grid=None, seeds=(0, 1), **extra) -> Path:
    sweep = {"config": str(config), "set": TINY, "grid": grid or ALPHAS, "seeds": list(seeds), **extra}
    path.write_text(yaml.safe_dump(sweep))
    return path


@pytest.fixture
def trained(monkeypatch):
    """The folders of the jobs each sweep trains (``train_job`` calls), in order."""
    calls = []
    real = backends.train_job

    def counting(job):
        calls.append(job["dir"])
        return real(job)

    monkeypatch.setattr(backends, "train_job", counting)
    return calls


def summary_rows(out: Path) -> dict[str, dict]:
    with open(out / "summary.csv", newline="") as f:
        return {row["point"]: row for row in csv.DictReader(f)}


def test_resolve_is_what_print_config_prints(icrl_cmd):
    args = ["--data.alpha", "0.5", "--data.context_length", "16"]
    printed = subprocess.run([*icrl_cmd, *fit_args(str(BASE), args, 3), "--print_config"], capture_output=True,
                             text=True, check=True).stdout
    assert resolve(str(BASE), args, 3) == printed
    assert "seed: 3" in printed and "alpha: 0.5" in printed


def test_sweep_summary_reuse_and_changed_yaml(tmp_path, trained, capsys):
    config = tmp_path / "base.yaml"
    config.write_text(BASE.read_text())
    sweep = write_sweep(tmp_path / "sweep.yaml", config)
    out = tmp_path / "out"
    main([str(sweep), "--out", str(out), "--no-progress"])
    assert len(trained) == 6
    rows = summary_rows(out)
    assert list(rows) == ["alpha=0.0", "alpha=0.5", "alpha=0.8"]
    assert all(r["seeds ok"] == "2" and r["seeds failed"] == "0" for r in rows.values())
    # Reparam-Linear-FA under normalized GD: after 5 steps of η = 0.1, Λ = 0.5 and on any validation set
    # L = H(α) + ln(1 + (1-α)(N-2) e^{-Λ}) for α > 0 (docs/science.md §R.6); the same for both seeds
    expected = math.log(2) + math.log(1 + 0.5 * 58 * math.exp(-0.5))
    assert float(rows["alpha=0.5"]["val/loss mean"]) == pytest.approx(expected, abs=1e-4)
    assert float(rows["alpha=0.5"]["val/loss std"]) == pytest.approx(0.0, abs=1e-6)
    md = (out / "summary.md").read_text()
    assert "| alpha=0.5 | 0.5 | 2/2 |" in md and "Failed runs" not in md
    # TensorBoard runs sit under folders named after the overrides
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["alpha=0.0", "alpha=0.5", "alpha=0.8"]

    trained.clear()
    main([str(sweep), "--out", str(out), "--no-progress", "--reuse"])
    assert trained == []  # the same runs: reused
    extended = write_sweep(tmp_path / "sweep.yaml", config, grid={"data.alpha": [0.0, 0.5, 0.8, 0.2]})
    main([str(extended), "--out", str(out), "--no-progress", "--reuse"])
    assert [Path(d).parent.name for d in trained] == ["alpha=0.2", "alpha=0.2"]  # only the new point
    trained.clear()
    config.write_text(BASE.read_text().replace("lr: 0.1", "lr: 0.5"))  # the base YAML changed: every run
    main([str(extended), "--out", str(out), "--no-progress", "--reuse"])
    assert len(trained) == 8
    rows = summary_rows(out)
    assert float(rows["alpha=0.5"]["val/loss mean"]) != pytest.approx(expected, abs=1e-4)


def test_runs_in_one_warm_process_share_the_parsers_not_the_arguments(tmp_path):
    tiny = [a for k, v in TINY.items() for a in (f"--{k}", str(v))]
    other = plan_job(str(BASE), [*tiny, "--model.init_args.d_model", "160", "--data.alpha", "0.5",
                                 "--trainer.callbacks+=lightning.pytorch.callbacks.LearningRateMonitor"], 1,
                     tmp_path / "a", "v")
    plain = plan_job(str(BASE), tiny, 0, tmp_path / "b", "v")
    again = plain | {"dir": str(tmp_path / "c")}
    for job in (other, plain, again):
        assert train_job(job)["exit_code"] == 0
    expected = yaml.safe_load(resolve(str(BASE), tiny, 0))
    for job in (plain, again):  # what each of these runs trained from is exactly its own resolved config
        saved = yaml.safe_load(next(Path(job["dir"]).rglob("config.yaml")).read_text())
        assert saved == expected | {"trainer": expected["trainer"] | {"default_root_dir": job["dir"]}}
        callbacks = [c["class_path"] for c in saved["trainer"].get("callbacks") or []]
        assert not any("LearningRateMonitor" in c for c in callbacks), callbacks  # the first run's own
    # the classes of another family's point build with their own settings after a recall run in this process
    # (Lightning's instantiators would hand the data module the last run's hyper-parameters)
    regression = ROOT / "configs" / "regression" / "fig4-heads.yaml"
    assert "heads: 8" in resolve(str(regression), ["--model.init_args.heads", "8"], 0, build=True)


def test_a_non_finite_run_is_listed_and_the_others_finish(tmp_path, capsys):
    # lr 1e30 under normalized GD or Adam stays finite; plain SGD at 1e38 overflows the Origin model's logits
    sweep = write_sweep(tmp_path / "sweep.yaml", BASE.with_name("origin-linear-fa.yaml"),
                        grid={"model.init_args.optimizer.init_args.lr": [1e38, 0.1]}, seeds=[0],
                        args=["--model.init_args.optimizer", "torch.optim.SGD"])
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main([str(sweep), "--out", str(out), "--no-progress"])
    assert str(exit_info.value.code).startswith("icrl sweep: 1 run(s) failed")
    rows = summary_rows(out)
    assert rows["lr=1e+38"]["seeds failed"] == "1" and rows["lr=0.1"]["seeds ok"] == "1"
    failed = [line for line in (out / "summary.md").read_text().splitlines() if line.startswith("| lr=1e+38 | 0 |")]
    assert len(failed) == 1 and "| 1 |" in failed[0]  # exit code 1: a non-finite loss
    log = Path(failed[0].split("`")[1])
    assert log.is_file() and "train/loss = nan" in log.read_text()


@pytest.mark.parametrize("grid, message", [
    ({"data.alphax": [0.5]}, "Option 'alphax' is not accepted"),
    ({"data.alpha": []}, "grid.data.alpha must be a non-empty list"),
    ({"trainer.num_nodes": [2]}, "trainer.num_nodes 2: a sweep trains each run on one machine (allowed: 1)"),
    ({"data.alpha": [0.5, 1.5]}, "point alpha=1.5 (config {BASE}): alpha must lie in [0, 1)"),  # by the data class
    ({"model.init_args.d_model": [128, 8]}, "point d_model=8 (config {BASE}): d_model must be >= 2 * vocab_size"),
], ids=["unknown setting", "empty grid", "several nodes", "bad alpha", "bad d_model"])
def test_bad_sweep_is_refused_before_any_run(tmp_path, capsys, grid, message):
    sweep = write_sweep(tmp_path / "sweep.yaml", grid=grid)
    with pytest.raises(SystemExit) as exit_info:
        main([str(sweep), "--out", str(tmp_path / "out"), "--no-progress"])
    assert exit_info.value.code == 2 and message.format(BASE=BASE) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing trained or written, α = 0.5 neither


def test_killed_sweep_keeps_finished_runs_and_resumes_the_other(tmp_path, trained):
    sweep = write_sweep(tmp_path / "sweep.yaml", grid={"data.alpha": [0.0, 0.5]}, seeds=[0],
                        args=["--trainer.max_steps", "400", "--trainer.val_check_interval", "20",
                              "--checkpoint_every_n_steps", "20"])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "icrl", "sweep", str(sweep), "--out", str(out), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first, second = out / "runs" / "alpha=0.0", out / "runs" / "alpha=0.5"
    deadline = time.monotonic() + 300
    while not list(second.glob("*/lightning_logs/**/last.ckpt")):  # the second run has a checkpoint: kill
        assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list(second.glob("*/result.json"))
    finished = next(first.glob("*/result.json"))
    stamp = finished.stat().st_mtime_ns

    main([str(sweep), "--out", str(out), "--no-progress", "--reuse"])
    assert [Path(d).parent.name for d in trained] == ["alpha=0.5"]
    assert finished.stat().st_mtime_ns == stamp
    result = json.loads(next(second.glob("*/result.json")).read_text())
    assert result["exit_code"] == 0 and result["resumed_from"].endswith("last.ckpt")
    assert "--ckpt_path" in (Path(result["dir"]) / "log.txt").read_text()
    assert read_scalars(result["dir"])["val/loss"][0][-1] == 399  # trained to the end, across the two processes


def test_regression_sweep_and_the_example_file(tmp_path):
    example = load(ROOT / "sweeps" / "recall-alpha.yaml")
    assert [p.name for p in example.points] == ["alpha=0.2", "alpha=0.5", "alpha=0.8"] and example.seeds == (0, 1)
    tiny = {"data.batch_size": 8, "data.n_train": 64, "data.n_val": 16, "trainer.max_steps": 3,
            "trainer.val_check_interval": 3}
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"config": str(ROOT / "configs" / "regression" / "fig2-1layer.yaml"),
                                     "set": tiny, "grid": {"model.init_args.heads": [2, 4]}, "metrics": ["val/loss"]}))
    main([str(sweep), "--out", str(tmp_path / "out"), "--no-progress"])
    rows = summary_rows(tmp_path / "out")
    assert list(rows) == ["heads=2", "heads=4"] and rows["heads=2"]["val/loss mean"] != rows["heads=4"]["val/loss mean"]
    assert list(rows["heads=2"]) == ["point", "model.init_args.heads", "seeds ok", "seeds failed", "val/loss mean",
                                     "val/loss std"]


# --- the same sweep on both backends, with a 2-process DDP run ------------------------------------

DDP = ("--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp")


def backend_sweep(tmp_path: Path, backend: str) -> dict:
    """3 points × 2 seeds, and a 2-process DDP run (seed 0): ``{(point name, seed): result}``."""
    shared = tuple(a for k, v in TINY.items() for a in (f"--{k}", str(v)))
    ddp = Point("ddp", str(BASE), (*shared, "--data.alpha", "0.5", *DDP))
    done = run_sweep(plan_sweep(grid_points(str(BASE), ALPHAS, TINY), [0, 1], tmp_path / backend), backend, jobs=2,
                     progress=False)
    done |= run_sweep(plan_sweep([ddp], [0], tmp_path / backend), backend, jobs=2, progress=False)
    return {(p.name, s): r for (p, s), r in done.items()}


def end(result: dict, metric: str = "val/loss") -> float:
    return result["scalars"][metric][1][-1]


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    return backend_sweep(tmp_path_factory.mktemp("sweep"), "local")


def test_ddp_run_trains_once_on_two_processes(local_sweep):
    result = local_sweep["ddp", 0]
    run_dir = Path(result["dir"])
    assert result["exit_code"] == 0 and result["processes"] == 2 and result["subprocess"]
    versions = list(run_dir.glob("lightning_logs/**/version_*"))
    assert len(versions) == 1  # a second launch of the sweep would have logged a second version
    log = (run_dir / "log.txt").read_text()
    assert log.count("icrl fit") == 1 and "MEMBER: 2/2" in log
    with open(versions[0] / "scalars.csv", newline="") as f:
        val_steps = [int(step) for tag, step, *_ in csv.reader(f) if tag == "val/loss"]
    assert val_steps == [4]  # rank 0 alone logs, once


def test_ray_backend_gives_the_local_numbers(local_sweep, tmp_path):
    pytest.importorskip("ray", reason="the Ray backend needs ray: pip install -e '.[ray]'")
    local = local_sweep
    ray_done = backend_sweep(tmp_path, "ray")
    assert ray_done.keys() == local.keys()
    for key, result in local.items():
        assert ray_done[key]["exit_code"] == 0 and ray_done[key]["key"] == result["key"]
        for metric in ("val/loss", "val/ood_loss"):
            assert end(ray_done[key], metric) == end(result, metric), (key, metric)
