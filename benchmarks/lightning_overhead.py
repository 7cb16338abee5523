"""What Lightning costs per training step: ``Trainer.fit`` against a bare loop over the same objects.

Builds the run of a config (default: the paper's Reparam-Linear-FA, batch 512, context 256) through
``icrl.cli.cli_main`` exactly as ``icrl fit`` does, then times, in one process and alternately:

- ``bare``: a plain loop over the same module, optimizer and DataLoader (the training step's
  loss, ``zero_grad``, ``backward``, ``step``);
- ``fit``: ``trainer.fit`` with the config's trainer (TensorBoard logger, progress bar, validation
  every ``val_check_interval`` steps, the recall metrics), and variants that switch one
  Lightning feature off, to see what each costs; variants "before" put back what an earlier
  change removed (with them runs ``bare`` as before too), and "prototype" ones try a change proposed
  for files outside this benchmark.

A step's time is the interval between consecutive ``on_train_batch_start`` calls (data fetch,
step, hooks, logging); intervals that contain a validation are left out and reported apart.
Steady state: the mean over the steps after ``--warmup`` (wall clock, and process CPU time, which
leaves out the waits for a core that other processes hold); each variant runs ``--repeats`` times
and the run with the least CPU time per step counts (the machine is shared).

    python benchmarks/lightning_overhead.py                 # table
    python benchmarks/lightning_overhead.py --json
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

from lightning.pytorch import Callback
import torch
from lightning.pytorch.profilers import PassThroughProfiler
from torch.nn import functional as nnf
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import machine, machine_end, machine_line, parser, set_threads, train_step  # noqa: E402

from icrl.callbacks import NonFiniteGuard, NonFiniteLossError  # noqa: E402
from icrl.cli import cli_main  # noqa: E402
from icrl.recall import RecallDataModule, RecallModule  # noqa: E402
from icrl.recall.data import RecallStream  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class LogEveryStep(RecallModule):
    """The step as it was before: ``self.log("train/loss")`` on every step, not only on logging steps."""

    def training_step(self, batch, batch_idx):
        loss = nnf.cross_entropy(self(batch["tokens"]).logits, batch["target"])
        self.log("train/loss", loss, prog_bar=True)
        return loss


class ManualOptimization(RecallModule):
    """For comparison only: the step written with Lightning's manual optimization (no closure).

    Not a recommendation: gradient accumulation and clipping flags of the Trainer then no longer apply.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        log = self.is_logging_step()  # before the step: optimizer.step() advances global_step
        optimizer = self.optimizers()
        loss = nnf.cross_entropy(self(batch["tokens"]).logits, batch["target"])
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        if log:
            self.log("train/loss", loss, prog_bar=True)
        return loss.detach()


class TorchDataLoader(RecallDataModule):
    """The training batches as they were before: through torch's own DataLoader iterator, not ``StreamLoader``'s."""

    def train_dataloader(self) -> DataLoader:
        stream = RecallStream(self.recall_task, self.batch_size, self.seed, 0, 1, self.batches_consumed, self.fixed_sample)
        return DataLoader(stream, batch_size=None)


class SyncGuard(NonFiniteGuard):
    """The guard as it was before: ``bool(torch.isfinite(loss))`` every step (a kernel and a host sync)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss):
            raise NonFiniteLossError(f"train/loss = {loss.item()} at step {trainer.global_step}")


class PlainAttributes(RecallModule):
    """Prototype (for ``icrl/recall/module.py``): Lightning writes ``pl_module._current_fx_name`` around
    every hook it calls, ~45 times a step; ``nn.Module.__setattr__`` costs ~1.1 µs a write (it looks for
    parameters, buffers and submodules of that name), ``object.__setattr__`` 0.1 µs. Same attribute, same
    ``__dict__``: a string is never a parameter, buffer or submodule.
    """

    def __setattr__(self, name, value):
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


class NullProfiler(PassThroughProfiler):
    """Prototype (for ``icrl/cli.py``): Lightning's default profiler, ``PassThroughProfiler``, opens a
    generator-based context manager (``contextlib.contextmanager``, ~1 µs) around every hook and loop
    stage, 54 times a step (counted, docs/performance.md section 3), to call its empty ``start``/``stop``; this one hands out one shared
    ``nullcontext``. ``--trainer.profiler simple`` etc. still work as before (a different profiler).
    """

    _nothing = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.nullcontext:
        return self._nothing


class StepTimer(Callback):
    """Records ``perf_counter`` at every training batch start, and which intervals hold a validation."""

    def __init__(self):
        self.starts: list[tuple[float, float]] = []  # (wall, process CPU) seconds
        self.with_validation: set[int] = set()
        self.validation_seconds: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.starts.append((time.perf_counter(), time.process_time()))

    def on_validation_start(self, trainer, pl_module):
        self._val_start = time.perf_counter()
        self.with_validation.add(len(self.starts) - 1)  # the interval after the last batch start

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.validation_seconds.append(time.perf_counter() - self._val_start)

    def intervals(self, warmup: int) -> list[tuple[float, float]]:
        return intervals(self.starts, warmup, self.with_validation)


def intervals(starts: list[tuple[float, float]], warmup: int, skip: set[int] = frozenset()) -> list[tuple[float, float]]:
    """``(wall, cpu)`` seconds between consecutive step starts, after ``warmup`` steps, leaving out ``skip``."""
    return [(b[0] - a[0], b[1] - a[1]) for i, (a, b) in enumerate(zip(starts, starts[1:]))
            if i >= warmup and i not in skip]


def summarise(steps: list[tuple[float, float]]) -> dict:
    wall, cpu = [w for w, _ in steps], [c for _, c in steps]
    return {"step_ms": 1e3 * statistics.fmean(wall), "step_ms_median": 1e3 * statistics.median(wall),
            "step_cpu_ms": 1e3 * statistics.fmean(cpu)}


def build(args, root: str, *extra: str):
    """The config's model, data module and trainer, as ``icrl fit --config ...`` builds them."""
    argv = ["--config", str(args.config), "--trainer.max_steps", str(args.steps),
            "--trainer.default_root_dir", root, "--trainer.enable_model_summary", "false", *extra]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cli_main(argv, run=False)


def run_bare(args, root: str, *extra: str) -> dict:
    cli = build(args, root, *extra)
    module, data = cli.model, cli.datamodule
    data.setup("fit")
    optimizer = module.configure_optimizers()
    loader = iter(data.train_dataloader())
    starts = []
    for i in range(args.steps):  # training_step's loss, without its self.log (no Trainer here)
        starts.append((time.perf_counter(), time.process_time()))
        batch = next(loader)
        train_step(optimizer, nnf.cross_entropy(module(batch["tokens"]).logits, batch["target"]))
    starts.append((time.perf_counter(), time.process_time()))
    return summarise(intervals(starts, args.warmup))


def run_fit(args, root: str, *extra: str, miniters: str = "10") -> dict:
    os.environ["TQDM_MINITERS"] = miniters  # read when the Trainer builds its progress bar
    cli = build(args, root, *extra)
    timer = StepTimer()
    cli.trainer.callbacks.append(timer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli.trainer.fit(cli.model, cli.datamodule)
    val = timer.validation_seconds
    return {**summarise(timer.intervals(args.warmup)),
            "validation_ms": 1e3 * statistics.fmean(val) if val else None, "validations": len(val)}


EVERY_STEP = ["--model.class_path", "lightning_overhead.LogEveryStep"]
GUARD10 = ["--trainer.callbacks+=icrl.callbacks.NonFiniteGuard", "--trainer.callbacks.check_every_n_steps=10"]
NO_BAR = ["--trainer.enable_progress_bar", "false"]
REPRODUCE = [*NO_BAR, "--trainer.enable_checkpointing", "false"]
TORCH_LOADER = ["--data.class_path", "lightning_overhead.TorchDataLoader"]
PLAIN_ATTRIBUTES = ["--model.class_path", "lightning_overhead.PlainAttributes"]
NULL_PROFILER = ["--trainer.profiler", "lightning_overhead.NullProfiler"]
BEFORE = [*TORCH_LOADER, "--trainer.callbacks+=lightning_overhead.SyncGuard"]
# the bare loop, and the same over the training DataLoader as it was before (run with the variants "before")
BARE = {"bare": [], "bare, torch's DataLoader iterator (before)": TORCH_LOADER}
# name: (icrl fit arguments, TQDM_MINITERS: the progress bar's least refresh rate; `icrl` sets 10)
VARIANTS = {
    "fit": ([], "10"),
    "fit, before (torch's DataLoader, guard syncing every step)": (BEFORE, "10"),
    "fit, logging and bar every step (before the fixes)": (EVERY_STEP, "1"),
    "fit, no progress bar": (NO_BAR, "10"),
    "fit, guard every 10": (GUARD10, "10"),
    "fit, torch's DataLoader iterator (before)": (TORCH_LOADER, "10"),
    "fit, plain attribute writes (prototype)": (PLAIN_ATTRIBUTES, "10"),
    "fit, null profiler (prototype)": (NULL_PROFILER, "10"),
    "fit, both prototypes": ([*PLAIN_ATTRIBUTES, *NULL_PROFILER], "10"),
    "fit, as icrl-reproduce runs it": (REPRODUCE, "10"),
    "fit, as icrl-reproduce, before": ([*REPRODUCE, *BEFORE], "10"),
    "fit, as icrl-reproduce, logging every step (before the fix)": ([*REPRODUCE, *EVERY_STEP], "10"),
    "fit, as icrl-reproduce, guard every 10": ([*REPRODUCE, *GUARD10], "10"),
    "fit, as icrl-reproduce, both prototypes": ([*REPRODUCE, *PLAIN_ATTRIBUTES, *NULL_PROFILER], "10"),
    "fit, as icrl-reproduce, sampling in a worker": ([*REPRODUCE, "--data.init_args.num_workers", "1"], "10"),
    "fit, as icrl-reproduce, manual optimization": (
        ["--model.class_path", "lightning_overhead.ManualOptimization", *REPRODUCE], "10"),
}


def parse(argv=None):
    p = parser(__doc__, threads=1)
    p.add_argument("--config", type=Path, default=ROOT / "configs/recall/fig1/reparam-linear-fa.yaml")
    p.add_argument("--steps", type=int, default=600, help="training steps per run")
    p.add_argument("--warmup", type=int, default=50, help="steps left out at the start of each run")
    p.add_argument("--repeats", type=int, default=3, help="runs per variant (alternating); the fastest counts")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    set_threads(args.threads)
    start = machine()
    best: dict[str, dict] = {}
    # "bare" is the reference of the overheads; the bare loop as before runs where a variant as before does
    bare_loops = [b for b in BARE if b == "bare" or any(TORCH_LOADER[1] in VARIANTS[v][0] for v in args.variants)]
    with tempfile.TemporaryDirectory() as root, contextlib.redirect_stdout(sys.stderr):  # Lightning's prints, bars
        for _ in range(args.repeats):
            for name in [*bare_loops, *args.variants]:
                r = (run_bare(args, root, *BARE[name]) if name in BARE
                     else run_fit(args, root, *VARIANTS[name][0], miniters=VARIANTS[name][1]))
                if name not in best or r["step_cpu_ms"] < best[name]["step_cpu_ms"]:
                    best[name] = r
                if not args.json:
                    print(f"  {name}: {r['step_ms']:.3f} ms/step", file=sys.stderr)
    bare, bare_cpu = best["bare"]["step_ms"], best["bare"]["step_cpu_ms"]
    for r in best.values():
        r["steps_per_s"] = 1e3 / r["step_ms"]
        r["overhead"] = r["step_ms"] / bare - 1
        r["overhead_cpu"] = r["step_cpu_ms"] / bare_cpu - 1
    report = {"machine": machine_end(start),
              "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
              "threads": args.threads, "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
              "results": best, "overhead": best["fit"]["overhead"]}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(machine_line(report["machine"], f", {args.threads} thread(s)"))
        print(f"{report['config']}: {args.steps} steps per run, first {args.warmup} left out, best of {args.repeats}")
        print(f"{'run':62} {'ms/step':>8} {'median':>7} {'cpu ms':>7} {'steps/s':>8} {'overhead':>9} {'cpu':>6} "
              f"{'validation':>11}")
        for name, r in best.items():
            val = f"{r['validation_ms']:.0f} ms" if r.get("validation_ms") else ""
            print(f"{name:62} {r['step_ms']:8.3f} {r['step_ms_median']:7.3f} {r['step_cpu_ms']:7.3f} "
                  f"{r['steps_per_s']:8.1f} {100 * r['overhead']:8.1f}% {100 * r['overhead_cpu']:5.1f}% {val:>11}")
    return report


if __name__ == "__main__":
    main()
