"""The work every way of training recall Figure 1 must do, and so the most ``--ensemble`` can gain on this machine.

Figure 1's 36 runs (``icrl-reproduce recall-fig1``: 6 configs × α 0 and 0.5 × seeds 0–2) are built as the sweep
builds them, then, per config, its 6 runs as one stacked ensemble (``RecallModule.stacked_losses``): the CPU time of
a bare step (every member draws its batch, the stacked forward and backward, each member's ``NormalizedGD``) and of
one validation (both loaders, every metric), without Lightning, logging or start-up. Scaled to the runs' 2000 steps
and 21 validations, this is the shared work W that an ensemble cannot remove: a sweep whose CPU time is C without
``--ensemble`` is at most C / W times faster with it (docs/performance.md §7).

    python benchmarks/ensemble_bound.py
    python benchmarks/ensemble_bound.py --sweep-cpu 250     # the bound for a sweep measured at 250 s of CPU
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ensemble import step_fn  # noqa: E402
from timing import machine, machine_end, machine_line, parser, set_threads  # noqa: E402

from icrl.sweep.job import fit_args, instantiate, parsers  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = (*(f"recall/fig1/{c}.yaml" for c in ("reparam-linear-fa", "reparam-softmax-fa", "reparam-linear-w-fa",
                                               "origin-linear-fa", "origin-softmax-f")),
           "recall/fig1-later/reparam-softmax-fa.yaml")


def ensemble(config: str, seeds=(0, 1, 2), alphas=(0.0, 0.5)) -> tuple[list, list, list]:
    """The runs of ``config`` at ``alphas`` × ``seeds``: modules, optimizers, data modules, as ``icrl fit`` builds them."""
    fit = parsers()[2]["fit"]
    models, optimizers, data = [], [], []
    for seed, alpha in itertools.product(seeds, alphas):
        cfg = fit.parse_args(fit_args(str(ROOT / "configs" / config), ["--data.alpha", str(alpha)], seed)[1:])
        torch.manual_seed(seed)
        built = instantiate(fit, cfg)
        conf = built.model.configure_optimizers()
        models.append(built.model)
        optimizers.append(conf if isinstance(conf, torch.optim.Optimizer) else conf["optimizer"])
        data.append(built.data)
    return models, optimizers, data


def cpu_seconds(fn, calls: int) -> float:
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls


def work(config: str, steps: int) -> dict:
    """CPU seconds of one stacked step of ``config``'s runs, of their validation sets' set-up and one validation."""
    models, optimizers, data = ensemble(config)

    step = step_fn(models, optimizers, data, "cpu")  # as benchmarks/ensemble.py times it

    def validate() -> None:
        with torch.no_grad():
            for dm, model in zip(data, models):
                for j, loader in enumerate(dm.val_dataloader()):
                    for batch in loader:
                        inputs = model.metric_inputs(batch, j)
                        for name, metric in model.eval_metrics[j].items():
                            metric.update(*inputs[name])
                    for metric in model.eval_metrics[j].values():
                        metric.compute()
                        metric.reset()

    cpu_seconds(step, 3)  # warm-up
    start = time.process_time()
    for dm in data:
        dm.setup("validate")
    return {"members": len(models), "step_s": cpu_seconds(step, steps), "setup_s": time.process_time() - start,
            "validation_s": cpu_seconds(validate, 2)}


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, threads=1)
    p.add_argument("--steps", type=int, default=50, help="timed steps per config")
    p.add_argument("--train-steps", type=int, default=2000, help="a run's steps (Figure 1: 2000)")
    p.add_argument("--validations", type=int, default=21, help="a run's validations (every 100 steps and at the end)")
    p.add_argument("--sweep-cpu", type=float, help="a sweep's CPU seconds without --ensemble: print its bound")
    args = p.parse_args(argv)
    set_threads(args.threads)
    start = machine()
    rows = {}
    for config in CONFIGS:
        w = work(config, args.steps)
        w["total_s"] = args.train_steps * w["step_s"] + w["setup_s"] + args.validations * w["validation_s"]
        rows[config] = w
    result = {"machine": machine_end(start), "threads": args.threads, "configs": rows,
              "shared_work_s": sum(w["total_s"] for w in rows.values())}
    if args.sweep_cpu:
        result["bound"] = args.sweep_cpu / result["shared_work_s"]
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(machine_line(result["machine"], f", {args.threads} thread(s)"))
    print(f"{'config':42} {'ms/member-step':>14} {'validation ms':>14} {'runs s':>7}")
    for config, w in rows.items():
        k = w["members"]
        print(f"{config:42} {1e3 * w['step_s'] / k:>14.3f} {1e3 * w['validation_s'] / k:>14.1f} {w['total_s']:>7.1f}")
    print(f"shared work of the {sum(w['members'] for w in rows.values())} runs: {result['shared_work_s']:.1f} s of CPU")
    if args.sweep_cpu:
        print(f"a sweep of {args.sweep_cpu:.0f} s of CPU without --ensemble: at most {result['bound']:.2f}× faster with it")


if __name__ == "__main__":
    main()
