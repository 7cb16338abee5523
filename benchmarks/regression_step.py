"""The one-layer multi-head regression model: all heads at once against a Python loop over heads.

``icrl.regression.OneLayerMultiHead`` computes docs/science.md §T.2,
``ŷ_k = Σ_h w_{h,k} · yᵀ softmax(V_Nᵀ Q_h v_k)``, for all ``H`` heads in one batched product. The
reference here is the same formula with a loop over heads (one ``(N, d)·(d, d)·(d, K)`` product,
softmax and read-out per head), on the same weights and batch. At the paper's Figure-2 size
(``N = 30``, ``K = 200``, ``d = 100``, ``m = 20``, ``H = 64``, batch 256) both run a full training
step — forward, MSE, backward, Adam (lr 1e-4) — timed in interleaved rounds; their predictions and
gradients are compared first.

    python benchmarks/regression_step.py            # table, threads 1 and 2
    python benchmarks/regression_step.py --json
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as nnf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import (interleaved, machine, machine_end, machine_line, parser, ratios, set_threads,  # noqa: E402
                    summary, train_step)

from icrl.regression.data import sample_labels  # noqa: E402
from icrl.streams import generator  # noqa: E402
from icrl.regression.models import OneLayerMultiHead  # noqa: E402

RTOL = 1e-4


def loop_over_heads(net: OneLayerMultiHead, v: Tensor, y: Tensor) -> Tensor:
    """docs/science.md §T.2 head by head: ``Σ_h w_h ⊙ (yᵀ softmax(V_Nᵀ Q_h V))``, (B, K)."""
    v_n = v[: net.n_labelled]  # (N, d) V_Nᵀ
    out = 0.0
    for Q_h, w_h in zip(net.Q, net.w):  # (d, d), (K,)
        attn = torch.softmax(v_n @ Q_h @ v.T, dim=0)  # (N, K) softmax over the N prompt tokens
        out = out + w_h * (y @ attn)  # (B, K)
    return out


def batched(net: OneLayerMultiHead, v: Tensor, y: Tensor) -> Tensor:
    return net(v, y)


def make_step(net: OneLayerMultiHead, forward, v: Tensor, labels: list[Tensor]):
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    n, state = net.n_labelled, {"i": 0}

    def step():
        y = labels[state["i"] % len(labels)]
        state["i"] += 1
        train_step(opt, nnf.mse_loss(forward(net, v, y[:, :n]), y))

    return step


def compare(net: OneLayerMultiHead, v: Tensor, y: Tensor) -> dict:
    n, params = net.n_labelled, list(net.parameters())
    out = {}
    for name, forward in (("batched", batched), ("loop", loop_over_heads)):
        pred = forward(net, v, y[:, :n])
        out[name] = (pred.detach(), torch.autograd.grad(nnf.mse_loss(pred, y), params))
    (p_b, g_b), (p_l, g_l) = out["batched"], out["loop"]
    pred_err = ((p_b - p_l).abs().max() / p_l.abs().max()).item()
    grad_err = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(g_b, g_l))
    return {"pred_rel_err": pred_err, "grad_rel_err": grad_err, "match": pred_err < RTOL and grad_err < RTOL}


def run(args, threads: int) -> dict:
    gen = generator(0)
    K, N, d, m, B = args.n_tokens, args.n_labelled, args.token_dim, args.n_basis, args.batch
    v, f = torch.randn(K, d, generator=gen), torch.randn(K, m, generator=gen)
    labels = [sample_labels(f, B, 0.01, generator(1, i)) for i in range(8)]
    torch.manual_seed(0)
    net = OneLayerMultiHead(K, N, d, args.heads, beta=0.01)
    with torch.no_grad():
        net.w.normal_(0.0, 0.1)  # w = 0 at init would make every Q gradient zero
    check = compare(net, v, labels[0])
    times = interleaved({"batched": (make_step(net, batched, v, labels), args.calls),
                         "loop": (make_step(copy.deepcopy(net), loop_over_heads, v, labels), args.calls)},
                        rounds=args.rounds)
    return {"threads": threads, **ratios(summary(times["batched"]), summary(times["loop"]), "loop"), **check}


def parse(argv=None):
    p = parser(__doc__, threads=[1, 2])
    p.add_argument("--n-tokens", type=int, default=200, help="K")
    p.add_argument("--n-labelled", type=int, default=30, help="N")
    p.add_argument("--token-dim", type=int, default=100, help="d")
    p.add_argument("--n-basis", type=int, default=20, help="m")
    p.add_argument("--heads", type=int, default=64, help="H")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--calls", type=int, default=10, help="steps of each implementation per round")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    start = machine()
    results = []
    for threads in args.threads:
        set_threads(threads)
        results.append(run(args, threads))
    report = {"machine": machine_end(start),
              "size": {"n_tokens": args.n_tokens, "n_labelled": args.n_labelled, "token_dim": args.token_dim,
                       "n_basis": args.n_basis, "heads": args.heads, "batch": args.batch},
              "timing": f"min over {args.rounds} interleaved rounds of {args.calls} steps each",
              "results": results}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(machine_line(report["machine"]))
        print(f"K {args.n_tokens}, N {args.n_labelled}, d {args.token_dim}, m {args.n_basis}, H {args.heads}, "
              f"batch {args.batch}; full Adam step; {report['timing']}")
        print(f"{'thr':>3} {'batched ms':>10} {'loop ms':>8} {'ratio':>6} {'median':>6} {'cpu':>5} {'pred err':>9} "
              f"{'grad err':>9} match")
        for r in results:
            print(f"{r['threads']:>3} {r['step_ms']:10.3f} {r['loop_ms']:8.3f} {r['ratio']:6.1f} "
                  f"{r['ratio_median']:6.1f} {r['ratio_cpu']:5.1f} {r['pred_rel_err']:9.1e} {r['grad_rel_err']:9.1e} "
                  f"{'yes' if r['match'] else 'NO'}")
    return report


if __name__ == "__main__":
    main()
