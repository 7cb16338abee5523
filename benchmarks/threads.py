"""Training speed of a README command against torch's intra-op thread count, idle and with a core busy.

Runs ``icrl fit --config CONFIG --trainer.max_steps STEPS`` as a user does (the console script, in a
subprocess), once per ``OMP_NUM_THREADS`` setting per round, in interleaved rounds; ``--busy`` keeps
one extra process spinning (``python -c 'while 1: pass'``) for the whole measurement, as another job
holding a core would. ``unset`` runs without ``OMP_NUM_THREADS``, i.e. at icrl's default. The
training loop is timed from inside the run (a callback: first training batch to the end of fit,
validations included), so start-up is left out; steps/s is the median over rounds.

    python benchmarks/threads.py                                   # the README's first command, 1 vs 2 threads
    python benchmarks/threads.py --busy --threads unset 1 2        # one core held by another process
    python benchmarks/threads.py --config configs/regression/fig2-1layer.yaml --steps 200
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback

HERE = Path(__file__).resolve().parent


class LoopTimer(Callback):
    """Writes the threads torch runs with and the training loop's wall time to ``out`` (JSON)."""

    def __init__(self, out: str):
        self.out, self.start = out, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.start is None:
            self.start, self.first_step = time.perf_counter(), trainer.global_step

    def on_fit_end(self, trainer, pl_module):
        steps = trainer.global_step - self.first_step
        Path(self.out).write_text(json.dumps({"threads": torch.get_num_threads(), "steps": steps,
                                              "loop_s": time.perf_counter() - self.start}))


def run_once(config: str, steps: int, threads: str, tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if threads != "unset":
        env["OMP_NUM_THREADS"] = threads
    env["PYTHONPATH"] = str(HERE)  # for LoopTimer
    out = tmp / "timer.json"
    timer = json.dumps({"class_path": "threads.LoopTimer", "init_args": {"out": str(out)}})
    icrl = Path(sys.executable).parent / "icrl"
    subprocess.run([str(icrl), "fit", "--config", config, "--trainer.max_steps", str(steps),
                    "--trainer.default_root_dir", str(tmp), "--trainer.enable_progress_bar", "false",
                    "--trainer.callbacks+", timer], env=env, check=True, capture_output=True)
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/recall/fig1/reparam-linear-fa.yaml")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--threads", nargs="+", default=["1", "2"], help="OMP_NUM_THREADS values, or 'unset'")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--busy", action="store_true", help="keep one other process spinning on a core")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    busy = subprocess.Popen([sys.executable, "-c", "while 1: pass"]) if args.busy else None
    load = os.getloadavg()[0]
    rates: dict[str, list[float]] = {t: [] for t in args.threads}
    seen: dict[str, int] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.rounds):
                for t in args.threads:
                    r = run_once(args.config, args.steps, t, Path(tmp))
                    rates[t].append(r["steps"] / r["loop_s"])
                    seen[t] = r["threads"]
    finally:
        if busy is not None:
            busy.kill()
    report = {"config": args.config, "steps": args.steps, "busy": args.busy, "cpu_count": os.cpu_count(),
              "load_average_1min": [round(load, 2), round(os.getloadavg()[0], 2)],
              "steps_per_s": {t: round(statistics.median(v), 1) for t, v in rates.items()},
              "torch_threads": seen}
    if args.json:
        print(json.dumps(report))
        return
    print(f"{args.config}, {args.steps} steps, {args.rounds} rounds, busy core: {args.busy}, "
          f"{os.cpu_count()} cores, load average {report['load_average_1min'][0]} -> {report['load_average_1min'][1]}")
    for t in args.threads:
        print(f"  OMP_NUM_THREADS={t:<6} torch threads {seen[t]}  {report['steps_per_s'][t]:7.1f} steps/s")


if __name__ == "__main__":
    main()
