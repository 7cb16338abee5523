"""One recall training step of the package against the plain dense formula of docs/science.md §R.3.

For every attention × parameterization (feed-forward ``FA`` unless ``--feedforward``), at the paper
size (batch 512, context 256, N = 60, d = 128), in one process and on the same weights: a full
training step — sample a batch, forward, cross-entropy, backward, ``NormalizedGD`` — of the package
(``RecallTransformer``, logits only, as training runs it) and of the dense formula
(``icrl.recall.dense.dense_forward``), timed in interleaved
rounds; the two losses and gradients are compared on one batch first. Threads are set explicitly
(``--threads``, default 1 and 2). ``--scaling`` adds step time and peak memory against the context
length, each size in a fresh subprocess.

A ratio is the dense step's time over the package's, each the minimum over the rounds: ``ratio``
in wall-clock time, ``ratio_cpu`` in process CPU time (on one thread, the work without the waits
for a core other processes hold; on a shared machine the long dense step waits more, so
``ratio_cpu`` is the conservative one). The JSON gives both per combination and their minima.

    python benchmarks/recall_step.py                       # table
    python benchmarks/recall_step.py --json                # one JSON object (ratios, losses, gradients)
    python benchmarks/recall_step.py --scaling             # + time and memory against the context length
    python benchmarks/recall_step.py --device cuda         # on a GPU
"""

from __future__ import annotations

import argparse
import copy
import inspect
import itertools
import json
import resource
import subprocess
import sys
from functools import partial
from pathlib import Path

import torch
from torch.nn import functional as nnf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import (interleaved, machine, machine_end, machine_line, parser, ratios, set_threads,  # noqa: E402
                    summary, train_step)

import icrl.recall  # noqa: E402
from icrl.optim import NormalizedGD  # noqa: E402
from icrl.recall import RecallTask, RecallTransformer, sample_recall  # noqa: E402
from icrl.recall.dense import dense_forward  # noqa: E402
from icrl.streams import generator  # noqa: E402

# classes of icrl.recall, by name
ATTENTIONS = ["LinearAttention", "ReLUAttention", "SoftmaxAttention"]
PARAMETERIZATIONS = ["Origin", "Reparam", "ReparamW"]
RTOL = 1e-4  # losses and gradients must agree to this relative error (float32 sums over T positions)


def build(task: RecallTask, d_model: int, attention: str, parameterization: str, feedforward: str,
          device: str, seed: int = 0) -> RecallTransformer:
    """A model with small random weights (not the zero init, so that every gradient is non-trivial)."""
    torch.manual_seed(seed)
    make = getattr(icrl.recall, parameterization)
    # a random start where there is one: the weights are redrawn below anyway, and some zero starts are refused
    options = {"init_std": 0.1} if "init_std" in inspect.signature(make).parameters else {}
    model = RecallTransformer(task, d_model, getattr(icrl.recall, attention)(), partial(make, **options),
                              feedforward).to(device)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    return model


def forward_fast(model, tokens):
    return model(tokens, parts=False).logits


def forward_dense(model, tokens):
    return dense_forward(model, tokens).logits


def make_step(model: RecallTransformer, forward, batch_size: int, device: str, seed: int = 0):
    """A closure running one full training step on a fresh batch: sample, forward, backward, NormalizedGD."""
    opt = NormalizedGD(model.parameters(), lr=0.1)
    task, counter = model.task, itertools.count()

    def step():
        batch = sample_recall(task, batch_size, generator(seed, next(counter)))
        tokens, target = batch["tokens"].to(device), batch["target"].to(device)
        train_step(opt, nnf.cross_entropy(forward(model, tokens), target))

    return step


def compare(model: RecallTransformer, batch_size: int, device: str) -> dict:
    """Loss and gradients of the package and of the dense formula, same weights, same batch."""
    batch = sample_recall(model.task, batch_size, generator(12345))
    tokens, target = batch["tokens"].to(device), batch["target"].to(device)
    params = list(model.parameters())
    out = {}
    for name, forward in (("fast", forward_fast), ("dense", forward_dense)):
        loss = nnf.cross_entropy(forward(model, tokens), target)
        out[name] = (loss.detach(), torch.autograd.grad(loss, params))
    (loss_f, grads_f), (loss_d, grads_d) = out["fast"], out["dense"]
    scale = max(g.abs().max().item() for g in grads_d)
    grad_err = max((gf - gd).abs().max().item() for gf, gd in zip(grads_f, grads_d)) / max(scale, 1e-30)
    loss_err = abs(loss_f.item() - loss_d.item()) / max(abs(loss_d.item()), 1e-30)
    return {"loss": loss_f.item(), "loss_dense": loss_d.item(), "loss_rel_err": loss_err,
            "grad_rel_err": grad_err, "match": loss_err < RTOL and grad_err < RTOL}


def run_combo(args, threads: int, attention: str, parameterization: str, alpha: float) -> dict:
    task = RecallTask(vocab_size=args.vocab, context_length=args.context, alpha=alpha)
    fast = build(task, args.d_model, attention, parameterization, args.feedforward, args.device)
    dense = copy.deepcopy(fast)
    check = compare(fast, args.batch, args.device)
    gen = iter(range(10**9))
    times = interleaved({
        "fast": (make_step(fast, forward_fast, args.batch, args.device), args.fast_calls),
        "dense": (make_step(dense, forward_dense, args.batch, args.device), 1),
        "sample": (lambda: sample_recall(task, args.batch, generator(7, next(gen))), args.fast_calls),
    }, rounds=args.rounds, device=args.device)
    f, d, s = summary(times["fast"]), summary(times["dense"]), summary(times["sample"])
    return {"threads": threads, "attention": attention, "parameterization": parameterization,
            "feedforward": args.feedforward, "alpha": alpha,
            **ratios(f, d, "dense"), "step_cpu_ms": f["cpu_min_ms"], "dense_cpu_ms": d["cpu_min_ms"],
            "sample_ms": s["min_ms"], "sampling_share": s["min_ms"] / f["min_ms"], **check}


# ---------------------------------------------------------------- context-length scaling


def rss_mib(field: str) -> float | None:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from ``/proc/self/status``, in MiB (Linux)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024
    except (OSError, StopIteration):
        return None


def reset_peak_rss() -> bool:
    """Reset the peak RSS (``VmHWM``) to the current RSS; Linux ``/proc/self/clear_refs``."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_one(impl: str, context: int, args) -> dict:
    """Step time and the step's peak memory above what the process held before it (batch included).

    CPU: the peak resident set size, reset just before the steps (``/proc/self/clear_refs``), minus
    the resident size then; CUDA: ``torch.cuda.max_memory_allocated`` minus the allocated memory then.
    One step at a tiny context first pays the one-time costs (lazy initialisation of autograd, BLAS).
    """
    small = RecallTask(vocab_size=args.vocab, context_length=16, alpha=0.0)
    model = build(small, args.d_model, args.scaling_model[0], args.scaling_model[1], args.feedforward, args.device)
    make_step(model, forward_fast if impl == "fast" else forward_dense, 8, args.device)()
    task = RecallTask(vocab_size=args.vocab, context_length=context, alpha=0.0)
    model = build(task, args.d_model, args.scaling_model[0], args.scaling_model[1], args.feedforward, args.device)
    step = make_step(model, forward_fast if impl == "fast" else forward_dense, args.batch, args.device)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        method = "VmHWM" if reset_peak_rss() else "ru_maxrss"
        base = rss_mib("VmRSS") if method == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = interleaved({"step": (step, args.scaling_steps)}, rounds=1, device=args.device, warmup=0)["step"]
    if cuda:
        peak, method = torch.cuda.max_memory_allocated() / 2**20, "cuda.max_memory_allocated"
    else:
        peak = rss_mib("VmHWM") if method == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"impl": impl, "context": context, "step_ms": summary(times)["min_ms"], "peak_mib": peak - base,
            "memory_method": method}


def measure_in_subprocess(impl: str, context: int, args) -> dict:
    """``measure_one`` in a fresh interpreter, so that its peak memory is the step's alone."""
    cmd = [sys.executable, __file__, "--_measure", impl, str(context), "--threads", str(args.scaling_threads),
           *argv_of(args)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def scaling(args, measure=measure_in_subprocess) -> list[dict]:
    rows = []
    for context in args.contexts:
        for impl in ("fast", "dense"):
            x_mib = 4 * args.batch * context * args.d_model / 2**20  # X (B, T, d) float32
            if impl == "dense" and context > args.dense_max_context:
                rows.append({"impl": impl, "context": context, "step_ms": None, "peak_mib": None, "x_mib": x_mib})
                continue
            rows.append({**measure(impl, context, args), "x_mib": x_mib})
            if not args.json:
                r = rows[-1]
                print(f"  scaling: {impl:5s} T={context:6d}  {r['step_ms']:9.2f} ms  peak {r['peak_mib']:9.1f} MiB",
                      file=sys.stderr)
    # dense beyond the measured sizes: the measured peak per X-size, times the X size (analytic estimate)
    measured = [r for r in rows if r["impl"] == "dense" and r["peak_mib"] is not None]
    if measured:
        per_x = measured[-1]["peak_mib"] / measured[-1]["x_mib"]
        for r in rows:
            if r["impl"] == "dense" and r["peak_mib"] is None:
                r["peak_mib_estimated"] = per_x * r["x_mib"]
    return rows


def argv_of(args) -> list[str]:
    """The size arguments, passed on to the scaling subprocesses."""
    return ["--batch", str(args.batch), "--vocab", str(args.vocab), "--d-model", str(args.d_model),
            "--feedforward", args.feedforward, "--device", args.device, "--scaling-model", *args.scaling_model,
            "--scaling-steps", str(args.scaling_steps)]


# ---------------------------------------------------------------- output


def table(results: list[dict]) -> str:
    head = (f"{'thr':>3} {'attention':16} {'param':9} {'α':>4} {'step ms':>8} {'dense ms':>9} {'ratio':>6} "
            f"{'median':>6} {'cpu':>5} {'sample':>7} {'loss':>9} {'dense loss':>10} {'grad err':>9} match")
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r['threads']:>3} {r['attention']:16} {r['parameterization']:9} {r['alpha']:>4.1f} "
                     f"{r['step_ms']:8.3f} {r['dense_ms']:9.2f} {r['ratio']:6.1f} {r['ratio_median']:6.1f} {r['ratio_cpu']:5.1f} "
                     f"{100 * r['sampling_share']:6.1f}% {r['loss']:9.5f} {r['loss_dense']:10.5f} "
                     f"{r['grad_rel_err']:9.1e} {'yes' if r['match'] else 'NO'}")
    return "\n".join(lines)


def scaling_table(rows: list[dict]) -> str:
    lines = [f"{'impl':5} {'T':>6} {'step ms':>9} {'peak MiB':>9} {'X MiB':>8}"]
    for r in rows:
        ms = "—" if r["step_ms"] is None else f"{r['step_ms']:.2f}"
        if r["peak_mib"] is not None:
            mem = f"{r['peak_mib']:.1f}"
        else:
            mem = f"~{r['peak_mib_estimated']:.0f}*" if "peak_mib_estimated" in r else "—"
        lines.append(f"{r['impl']:5} {r['context']:>6} {ms:>9} {mem:>9} {r['x_mib']:8.0f}")
    lines.append("* not run: the measured dense peak per byte of X, times the size of X")
    return "\n".join(lines)


def fmt(per_thread: dict) -> str:
    return ", ".join(f"{t} thr {v:.1f}" for t, v in per_thread.items())


def parse(argv=None):
    p = parser(__doc__, threads=[1, 2])
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--vocab", type=int, default=60)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--feedforward", default="FA", choices=["none", "F", "FA"])
    p.add_argument("--alpha", type=float, nargs="+", default=[0.0, 0.5], help="tasks: 0 noiseless, > 0 noisy")
    p.add_argument("--attention", nargs="+", default=ATTENTIONS, help="attention classes of icrl.recall, by name")
    p.add_argument("--parameterization", nargs="+", default=PARAMETERIZATIONS,
                   help="parameterization classes of icrl.recall, by name")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (one dense step each)")
    p.add_argument("--fast-calls", type=int, default=30, help="package steps per round")
    p.add_argument("--device", default="cpu")
    p.add_argument("--scaling", action="store_true", help="also time and measure memory against the context length")
    p.add_argument("--contexts", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096, 8192, 16384])
    p.add_argument("--dense-max-context", type=int, default=2048,
                   help="largest context the dense formula is run at (its X alone is 4·B·T·d bytes)")
    p.add_argument("--scaling-model", nargs=2, default=["LinearAttention", "Origin"], metavar=("ATTENTION", "PARAM"))
    p.add_argument("--scaling-threads", type=int, default=1)
    p.add_argument("--scaling-steps", type=int, default=5, help="steps per size; the fastest is reported")
    p.add_argument("--_measure", nargs=2, metavar=("IMPL", "CONTEXT"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    if args._measure:
        set_threads(args.threads[0])
        print(json.dumps(measure_one(args._measure[0], int(args._measure[1]), args)))
        return {}
    results = []
    start = machine(args.device)
    for threads in args.threads:
        set_threads(threads)
        for attention, param, alpha in itertools.product(args.attention, args.parameterization, args.alpha):
            r = run_combo(args, threads, attention, param, alpha)
            results.append(r)
            if not args.json:
                print(f"  {threads} thread(s) {attention}/{param} α={alpha}: {r['step_ms']:.3f} ms vs "
                      f"{r['dense_ms']:.1f} ms  ({r['ratio']:.0f}×)", file=sys.stderr)
    report = {
        "machine": machine_end(start, args.device),
        "size": {"batch": args.batch, "context": args.context, "vocab": args.vocab, "d_model": args.d_model,
                 "feedforward": args.feedforward},
        "timing": f"min over {args.rounds} interleaved rounds ({args.fast_calls} package steps and 1 dense step each)",
        "results": results,
        "ratios": {str(t): {f"{r['attention']}/{r['parameterization']}/alpha={r['alpha']}": round(r["ratio"], 1)
                            for r in results if r["threads"] == t} for t in args.threads},
        "ratios_cpu": {str(t): {f"{r['attention']}/{r['parameterization']}/alpha={r['alpha']}": round(r["ratio_cpu"], 1)
                                for r in results if r["threads"] == t} for t in args.threads},
        "min_ratio": {str(t): min(r["ratio"] for r in results if r["threads"] == t) for t in args.threads},
        "min_ratio_cpu": {str(t): min(r["ratio_cpu"] for r in results if r["threads"] == t) for t in args.threads},
        "max_sampling_share": max(r["sampling_share"] for r in results),
        "all_match": all(r["match"] for r in results),
    }
    if args.scaling:
        set_threads(args.scaling_threads)
        report["scaling"] = scaling(args)
        report["scaling_threads"] = args.scaling_threads
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(machine_line(report["machine"], f", device {args.device}"))
        print(f"batch {args.batch}, context {args.context}, N {args.vocab}, d {args.d_model}, "
              f"feed-forward {args.feedforward}; {report['timing']}")
        print(table(results))
        print(f"min ratio per threads: wall {fmt(report['min_ratio'])}, CPU {fmt(report['min_ratio_cpu'])}; "
              f"max sampling share {100 * report['max_sampling_share']:.1f}%; losses and gradients match: "
              f"{report['all_match']}")
        if args.scaling:
            print(f"\ncontext-length scaling (batch {args.batch}, {args.scaling_threads} thread(s), "
                  f"{'/'.join(args.scaling_model)}-{args.feedforward}; peak memory of the steps above what the "
                  f"process held before them, batch included):")
            print(scaling_table(report["scaling"]))
    return report


if __name__ == "__main__":
    main()
