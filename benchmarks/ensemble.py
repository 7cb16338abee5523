"""Member-steps per second of an ensemble of K recall runs against K, on the current device (icrl/ensemble.py).

One training step of K members of ``configs/recall/fig1/<config>`` (paper size: batch 512, context 256) as
``icrl sweep --ensemble K`` trains them: the members' batches (on a GPU drawn on the device, ``device_sampling``, all
at once by ``sample_recall_stacked``; on a CPU by the NumPy sampler, one stream each), the K losses in one stacked
pass (``RecallModule.stacked_losses``), backward, each member's ``NormalizedGD``; Lightning's loop around it is not
counted (docs/performance.md §3 measures it). K = 1 is
the single run's step (``train_loss``). Members differ in seed and α (0 or 0.5), as Figure 1's do. Timed in
interleaved rounds; member-steps/s = K / the step's minimal wall time (``cpu`` column: by CPU time).

    python benchmarks/ensemble.py                          # table, K = 1 2 4 8 16 on a CPU
    python benchmarks/ensemble.py --device cuda --ks 1 4 16 64 256 --json
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import interleaved, machine, machine_end, machine_line, parser, set_threads, summary  # noqa: E402

from icrl.optim import NormalizedGD  # noqa: E402
from icrl.recall import Origin, RecallDataModule, RecallModule, Reparam, sample_recall  # noqa: E402
from icrl.recall.data import DEVICE, TRAIN, sample_recall_stacked  # noqa: E402
from icrl.streams import generator  # noqa: E402

MODELS = {"reparam-linear-fa": Reparam, "origin-linear-fa": Origin}


def members(k: int, parameterization, device: str, batch: int = 512, context: int = 256
            ) -> tuple[list[RecallModule], list, list[RecallDataModule]]:
    """K members (seed k, α alternating 0 and 0.5), their optimizers and data modules drawing on ``device``."""
    models, optimizers, data = [], [], []
    for seed, alpha in zip(range(k), itertools.cycle((0.0, 0.5))):
        torch.manual_seed(seed)
        dm = RecallDataModule(alpha=alpha, seed=seed, batch_size=batch, context_length=context)
        model = RecallModule(dm.task, parameterization=parameterization).to(device)
        models.append(model)
        optimizers.append(NormalizedGD(model.parameters(), lr=0.1))
        data.append(dm)
    return models, optimizers, data


def step_fn(models, optimizers, data, device: str):
    """One ensemble step on the members' next batches, drawn as their streams draw them on ``device``."""
    count = itertools.count()

    def draw(i: int) -> list[dict]:
        if device == "cpu":
            return [sample_recall(dm.recall_task, dm.batch_size, generator(dm.seed, TRAIN, 0, i)) for dm in data]
        return sample_recall_stacked([dm.recall_task for dm in data], data[0].batch_size,
                                     [generator(dm.seed, DEVICE, 0, i, device=device) for dm in data])

    def step() -> None:
        batches = draw(next(count))
        losses = RecallModule.stacked_losses(models, batches) if len(models) > 1 else models[0].train_loss(batches[0])
        for opt in optimizers:
            opt.zero_grad()
        losses.sum().backward()
        for opt in optimizers:
            opt.step()

    return step


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, threads=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="ensemble sizes K")
    p.add_argument("--config", choices=list(MODELS), default="reparam-linear-fa")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=4, help="steps per round")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--context", type=int, default=256)
    args = p.parse_args(argv)
    set_threads(args.threads)
    start = machine(args.device)
    fns = {k: (step_fn(*members(k, MODELS[args.config], args.device, args.batch, args.context), args.device),
               args.steps) for k in args.ks}
    times = interleaved(fns, args.rounds, args.device)
    rows = {}
    for k in args.ks:
        s = summary(times[k])
        rows[k] = {"step_ms": s["min_ms"], "member_steps_per_s": 1e3 * k / s["min_ms"],
                   "member_steps_per_s_cpu": 1e3 * k / s["cpu_min_ms"]}
    for k in args.ks:
        rows[k]["speedup_vs_1"] = rows[k]["member_steps_per_s"] / rows[args.ks[0]]["member_steps_per_s"]
    result = {"machine": machine_end(start, args.device), "threads": args.threads, "config": args.config,
              "ensembles": rows}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(machine_line(result["machine"], f", {args.device}, {args.threads} thread(s), {args.config}"))
    print(f"{'K':>5} {'step ms':>9} {'member-steps/s':>15} {'(by CPU time)':>14} {'vs K=' + str(args.ks[0]):>8}")
    for k, r in rows.items():
        print(f"{k:>5} {r['step_ms']:>9.2f} {r['member_steps_per_s']:>15.0f} {r['member_steps_per_s_cpu']:>14.0f} "
              f"{r['speedup_vs_1']:>7.2f}×")


if __name__ == "__main__":
    main()
