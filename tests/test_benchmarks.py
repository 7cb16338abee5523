"""Smoke tests of ``benchmarks/``: each runs at a tiny size, its checks pass, its JSON has its shape.

Those that only check a report's shape run a subprocess or a Lightning fit each, and are ``slow``."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import ensemble  # noqa: E402
import ensemble_bound  # noqa: E402
import recall_step  # noqa: E402
import startup  # noqa: E402
import regression_step  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    yield
    torch.set_num_threads(1)  # the benchmarks set their own thread counts


TINY_RECALL = ["--batch", "8", "--context", "16", "--vocab", "12", "--d-model", "32", "--threads", "1",
               "--rounds", "2", "--fast-calls", "2"]


def test_recall_step_json_reports_every_combination_with_matching_losses_and_gradients(capsys):
    recall_step.main([*TINY_RECALL, "--json"])
    report = json.loads(capsys.readouterr().out)
    combos = {(r["attention"], r["parameterization"], r["alpha"]) for r in report["results"]}
    assert combos == {(a, p, al) for a in recall_step.ATTENTIONS for p in recall_step.PARAMETERIZATIONS
                      for al in (0.0, 0.5)}
    assert report["all_match"] and all(r["match"] for r in report["results"])
    assert all(r["grad_rel_err"] < 1e-4 and r["loss_rel_err"] < 1e-4 for r in report["results"])
    assert set(report["ratios"]) == {"1"} and len(report["ratios"]["1"]) == 18
    assert all(v > 0 for v in report["ratios"]["1"].values()) and report["min_ratio"]["1"] > 0
    assert report["ratios_cpu"]["1"].keys() == report["ratios"]["1"].keys() and report["min_ratio_cpu"]["1"] > 0
    r = report["results"][0]
    assert r["threads"] == 1 and r["step_ms"] > 0 and r["dense_ms"] > 0 and 0 < r["sampling_share"]
    assert report["size"] == {"batch": 8, "context": 16, "vocab": 12, "d_model": 32, "feedforward": "FA"}
    assert {"cpu", "cpu_count", "torch", "device"} <= set(report["machine"])


def test_recall_step_scaling_measures_time_and_memory():
    args = recall_step.parse([*TINY_RECALL, "--contexts", "16", "32", "--dense-max-context", "16", "--scaling-steps", "1"])
    # in process here (the benchmark runs each size in a fresh interpreter, for its peak memory)
    rows = recall_step.scaling(args, measure=lambda impl, context, args: recall_step.measure_one(impl, context, args))
    rows = {(r["impl"], r["context"]): r for r in rows}
    assert set(rows) == {("fast", 16), ("dense", 16), ("fast", 32), ("dense", 32)}
    assert rows["fast", 32]["step_ms"] > 0 and rows["fast", 32]["peak_mib"] >= 0
    assert rows["dense", 32]["step_ms"] is None and rows["dense", 32]["peak_mib_estimated"] >= 0  # not run: estimated
    assert "fast" in recall_step.scaling_table(list(rows.values()))


def test_regression_step_batched_heads_equal_the_loop_over_heads(capsys):
    regression_step.main(["--n-tokens", "12", "--n-labelled", "4", "--token-dim", "6", "--n-basis", "3",
                          "--heads", "5", "--batch", "4", "--threads", "1", "--rounds", "1", "--calls", "2", "--json"])
    report = json.loads(capsys.readouterr().out)
    (r,) = report["results"]
    assert r["match"] and r["pred_rel_err"] < 1e-4 and r["grad_rel_err"] < 1e-4
    assert r["ratio"] > 0 and r["threads"] == 1


@pytest.mark.slow
def test_lightning_overhead_times_a_bare_loop_and_fit(capsys, tmp_path):
    import lightning_overhead

    config = tmp_path / "tiny.yaml"
    config.write_text((ROOT / "configs/recall/fig1/reparam-linear-fa.yaml").read_text()
                      .replace("context_length: 256", "context_length: 16").replace("batch_size: 512", "batch_size: 8")
                      .replace("val_check_interval: 100", "val_check_interval: 10"))
    lightning_overhead.main(["--config", str(config), "--steps", "30", "--warmup", "5", "--repeats", "1",
                             "--variants", "fit", "fit, logging and bar every step (before the fixes)", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert set(report["results"]) == {"bare", "fit", "fit, logging and bar every step (before the fixes)"}
    assert report["results"]["bare"]["overhead"] == 0 and report["results"]["fit"]["step_ms"] > 0
    assert report["results"]["fit"]["validations"] == 3


@pytest.mark.slow
def test_threads_times_the_console_script_at_each_setting(capsys, tmp_path):
    import threads

    config = tmp_path / "tiny.yaml"
    config.write_text((ROOT / "configs/recall/fig1/reparam-linear-fa.yaml").read_text()
                      .replace("context_length: 256", "context_length: 16").replace("batch_size: 512", "batch_size: 8"))
    threads.main(["--config", str(config), "--steps", "5", "--rounds", "1", "--threads", "1", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["torch_threads"] == {"1": 1} and report["steps"] == 5 and not report["busy"]
    assert all(v > 0 for v in report["steps_per_s"].values())


@pytest.mark.slow
def test_sweep_overhead_times_every_way_of_running_a_run(capsys):
    import sweep_overhead

    sweep_overhead.main(["--runs", "1", "--jobs", "1", "--no-ray", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert set(report["per_run_s"]) == {"plan", "local, in process", "local, 1 workers", "subprocess icrl fit"}
    assert all(seconds > 0 for seconds in report["per_run_s"].values()) and "fig1_s" not in report


def test_ensemble_reports_member_steps_per_second_against_k(capsys):
    ensemble.main(["--ks", "1", "3", "--batch", "8", "--context", "16", "--rounds", "1", "--steps", "1", "--json"])
    report = json.loads(capsys.readouterr().out)
    rows = report["ensembles"]
    assert set(rows) == {"1", "3"} and report["threads"] == 1 and report["machine"]["device"] == "cpu"
    assert rows["1"]["speedup_vs_1"] == 1.0 and all(r["member_steps_per_s"] > 0 and r["step_ms"] > 0 for r in rows.values())
    assert rows["3"]["member_steps_per_s"] == 3e3 / rows["3"]["step_ms"]


@pytest.mark.slow
def test_ensemble_bound_scales_each_configs_work_to_its_runs(capsys):
    ensemble_bound.main(["--steps", "1", "--train-steps", "10", "--validations", "2", "--sweep-cpu", "100", "--json"])
    report = json.loads(capsys.readouterr().out)
    rows = report["configs"]
    assert len(rows) == 6 and all(w["members"] == 6 for w in rows.values())
    for w in rows.values():
        assert w["total_s"] == pytest.approx(10 * w["step_s"] + w["setup_s"] + 2 * w["validation_s"])
    assert report["bound"] == pytest.approx(100 / sum(w["total_s"] for w in rows.values()))


@pytest.mark.slow
def test_gpu_checks_run_every_step_at_tiny_sizes_on_a_cpu(tmp_path):
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path), "DEVICE": "cpu",
           "QUICK": "1", "OUT": str(tmp_path / "out")}
    done = subprocess.run(["bash", "benchmarks/gpu_checks.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == {"device.txt", "recall_step.json", "fit-scalars.csv", "ensemble-equal.txt",
                                                "ensemble.json", "fig1.txt", "log.txt"}
    assert json.loads((out / "recall_step.json").read_text())["all_match"]
    assert set(json.loads((out / "ensemble.json").read_text())["ensembles"]) == {"1", "2"}
    assert (out / "ensemble-equal.txt").read_text().startswith("summary.csv: identical")
    assert [line.split(":")[0] for line in (out / "fig1.txt").read_text().splitlines()] == ["--ensemble 6", "--ensemble 1"]
    assert "val/bayes_gap" in (out / "fit-scalars.csv").read_text()


@pytest.mark.slow
def test_startup_splits_a_fit_into_its_phases():
    report = startup.main(["--repeats", "1", "--cases", "import", "fit", "--json"])
    fit = report["results"]["fit"]
    assert {"interpreter", "imports", "parser", "instantiate", "step", "exit"} <= set(fit["phases"])
    assert fit["total_ms"] == pytest.approx(sum(fit["phases"].values()))
    assert fit["import_ms"]["torch"] > 0 and "icrl" in report["results"]["import"]["import_ms"]
