"""What a sweep costs per run beyond training, on each backend, and the whole of recall Figure 1.

Times, on this machine:

- ``plan``: resolving one run (``icrl fit --print_config``'s parse, with the parser built once) and
  hashing it, in the sweep's process;
- ``local`` (``--jobs 1``: in the sweep's process), ``local`` with ``--jobs N`` (a pool of warm
  worker processes) and ``ray`` with ``--jobs N`` (a local Ray instance started by the sweep):
  ``--runs`` runs of one training step at a tiny size, so the wall-clock time is the overhead
  (start-up, the Trainer, logging, checkpoints, reading ``scalars.csv`` back), per run;
- ``subprocess``: the same run as its own ``icrl fit`` process (what every run would cost if
  none stayed in a warm worker; multi-process runs always pay it);
- ``--fig1``: ``icrl-reproduce recall-fig1 --jobs N`` (30 runs, full size) on ``local`` and ``ray``.

    python benchmarks/sweep_overhead.py                  # overheads (a few minutes)
    python benchmarks/sweep_overhead.py --fig1 --json    # and recall Figure 1 on both backends
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "recall" / "fig1" / "reparam-linear-fa.yaml"
ONE_STEP = ("--data.context_length", "16", "--data.batch_size", "8", "--data.n_val", "64", "--data.val_batch_size",
            "64", "--trainer.max_steps", "1", "--trainer.val_check_interval", "1")


def timed_sweep(backend: str, jobs: int, runs: int, root: Path) -> float:
    """Seconds per run of a sweep of ``runs`` one-step runs (distinct seeds), Ray's start-up included."""
    from icrl.sweep import plan_sweep, run_sweep
    from icrl.sweep.grid import Point

    start = time.perf_counter()
    planned = plan_sweep([Point("one-step", str(CONFIG), ONE_STEP)], list(range(runs)), root / f"{backend}-{jobs}")
    run_sweep(planned, backend, jobs, progress=False)
    return (time.perf_counter() - start) / runs


def timed_plan(runs: int, root: Path) -> float:
    from icrl.sweep.job import code_version, parsers, plan_job

    parsers()  # built once per sweep: counted apart
    version = code_version()
    start = time.perf_counter()
    for seed in range(runs):
        plan_job(str(CONFIG), ONE_STEP, seed, root / "plan", version)
    return (time.perf_counter() - start) / runs


def timed_subprocess(runs: int, root: Path) -> float:
    from icrl.sweep.job import fit_args

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    for seed in range(runs):
        subprocess.run([sys.executable, "-m", "icrl.cli", *fit_args(str(CONFIG), ONE_STEP, seed),
                        "--trainer.default_root_dir", str(root / f"sub{seed}")], env=env, check=True,
                       capture_output=True)
    return (time.perf_counter() - start) / runs


def timed_fig1(backend: str, jobs: int, root: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    script = Path(sys.executable).parent / "icrl-reproduce"  # this environment's, whatever PATH says
    subprocess.run([str(script), "recall-fig1", "--out", str(root / f"fig1-{backend}"), "--jobs", str(jobs),
                    "--backend", backend, "--no-progress"], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=8, help="one-step runs per measurement (default: 8)")
    p.add_argument("--jobs", type=int, default=2, help="parallel runs of the pool and of Ray (default: 2)")
    p.add_argument("--fig1", action="store_true", help="also time icrl-reproduce recall-fig1 on both backends")
    p.add_argument("--no-ray", dest="ray", action="store_false", help="leave the Ray backend out")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    report = {"runs": args.runs, "jobs": args.jobs, "load_before": os.getloadavg()[0], "per_run_s": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        per_run = report["per_run_s"]
        per_run["plan"] = timed_plan(args.runs, root)
        per_run["local, in process"] = timed_sweep("local", 1, args.runs, root)
        per_run[f"local, {args.jobs} workers"] = timed_sweep("local", args.jobs, args.runs, root)
        if args.ray:
            per_run[f"ray, {args.jobs} CPUs"] = timed_sweep("ray", args.jobs, args.runs, root)
        per_run["subprocess icrl fit"] = timed_subprocess(args.runs, root)
        if args.fig1:
            report["fig1_s"] = {"local": timed_fig1("local", args.jobs, root)}
            if args.ray:
                report["fig1_s"]["ray"] = timed_fig1("ray", args.jobs, root)
    report["load_after"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"load average {report['load_before']:.1f} → {report['load_after']:.1f}; {args.runs} one-step runs each")
    print("| what | seconds per run |\n|---|---|")
    for name, seconds in report["per_run_s"].items():
        print(f"| {name} | {seconds:.2f} |")
    for backend, seconds in report.get("fig1_s", {}).items():
        print(f"icrl-reproduce recall-fig1 --jobs {args.jobs} --backend {backend}: {seconds:.0f} s")


if __name__ == "__main__":
    main()
