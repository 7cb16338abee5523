"""Template-regression experiments of ``icrl-reproduce``: Figures 2–5 of Yang et al. (docs/science.md §T.4).

The configs under ``configs/regression/`` hold the paper's sizes (5000 Adam steps, batch 256, a
4-layer baseline meant for a GPU: ~15 s a step on 2 CPU cores). ``--quick`` shrinks steps, the
token dimension of Fig. 3, the 4-layer baseline and Fig. 5's wall-clock budget, so that all four
figures train in minutes on a CPU. The checks are the paper's captions: the trained model does
ridge regression (Fig. 2), the closer N is to m the better (Fig. 3), H must be large enough for
the one-layer model, and not too large for its step size (Fig. 4), but not for a deeper one (Fig. 5).
"""

from __future__ import annotations

from icrl.reproduce.experiments import Check, Curves, Experiment, Figure, Ref, Run, Sweep

PAPER = "Yang, Huang, Liang & Chi, template regression (arXiv 2408.10147)"
COLUMNS = (("train/loss", "train loss"), ("val/loss", "test loss"), ("val/ridge_loss", "ridge loss"),
           ("val/unseen_example_loss", "unseen examples"), ("val/unseen_task_loss", "unseen tasks"),
           ("val/unseen_task_ridge_loss", "unseen tasks: ridge"), ("val/ridge_gap", "gap to ridge"),
           ("val/best_gap", "gap to best"))
ONE_LAYER_QUICK = ("--trainer.max_steps", "600", "--trainer.val_check_interval", "60",
                   "--trainer.log_every_n_steps", "20")
FOUR_LAYER_SMALL = ("--model.init_args.d_model", "32", "--model.init_args.d_ff", "64",
                    "--data.init_args.batch_size", "16", "--data.init_args.n_val", "64")
FOUR_LAYER_QUICK = (*FOUR_LAYER_SMALL, "--model.init_args.n_heads", "4", "--trainer.max_steps", "100",
                    "--trainer.val_check_interval", "10", "--trainer.log_every_n_steps", "5")


def fig2() -> Experiment:
    one, four = "1-layer, H = 64", "4-layer transformer"
    panels = []
    for metric, title, ridge in (
            ("train/loss", "training loss", "val/ridge_loss"),
            ("val/loss", "inference loss (test prompts)", "val/ridge_loss"),
            ("val/unseen_example_loss", "unseen examples (the K − N unlabelled tokens)", None),
            ("val/unseen_task_loss", "unseen tasks (λ ~ N(1, 4I))", "val/unseen_task_ridge_loss")):
        refs = ((ridge, "ridge regression (docs/science.md §T.3)"),) if ridge else ()
        panels.append(Curves(metric, title, "mean squared error", ref_metrics=refs))
    checks = (
        Check({"model": one}, "val/loss", Ref("val/ridge_loss"), "trained model ≈ ridge regression", rtol=0.25),
        Check({"model": one}, "val/unseen_task_loss", Ref("val/unseen_task_ridge_loss"),
              "generalizes to unseen tasks like ridge", rtol=0.25),
        Check({"model": one}, "val/ridge_gap", Ref("val/ridge_loss", scale=0.25), "small gap to ridge", kind="below"),
    )
    return Experiment(
        "regression-fig2", "1-layer and 4-layer: training and inference loss, unseen examples and tasks",
        PAPER + ", Figure 2",
        runs=(Run(one, "regression/fig2-1layer.yaml"), Run(four, "regression/fig2-4layer.yaml")),
        figures=(Figure("regression-fig2", tuple(panels), "Figure 2: template regression, N = 30, K = 200, m = 20"),),
        columns=COLUMNS, checks=checks, quick=ONE_LAYER_QUICK, run_quick={four: FOUR_LAYER_QUICK},
        quick_note="the 1-layer model 600 steps; the 4-layer baseline d_model 32, d_ff 64, 4 heads, batch 16, "
                   "100 steps (full: 5000 steps, batch 256, d_model 256, d_ff 512, 8 heads)")


N_SWEEP = (50, 75, 100, 125, 150)


def fig3() -> Experiment:
    gaps = (("val/best_gap", "trained model ‖ŷ − ŷ_best‖²/K"),
            ("val/ridge_best_gap", "ridge (mτ) vs best (Nτ), closed form"))
    losses = (("val/loss", "trained model"), ("val/ridge_loss", "ridge (mτ)"), ("val/best_loss", "best (Nτ)"))
    checks = (
        Check({"n_labelled": 100}, "val/ridge_best_gap", 1e-6, "closed-form gap vanishes at N = m", kind="below"),
        Check({"n_labelled": 50}, "val/ridge_best_gap", Ref("val/ridge_best_gap", {"n_labelled": 100}),
              "closed form: N = 50 farther from the best than N = m", kind="above"),
        Check({"n_labelled": 50}, "val/best_gap", Ref("val/best_gap", {"n_labelled": 100}),
              "trained model: gap at N = 50 above the gap at N = m", kind="above"),
    )
    return Experiment(
        "regression-fig3", "performance gap against N at m = 100", PAPER + ", Figure 3",
        runs=tuple(Run("1-layer, H = 160", "regression/fig3-gap-vs-n.yaml", ("--data.init_args.n_labelled", str(n)),
                       {"n_labelled": n}) for n in N_SWEEP),
        figures=(Figure("regression-fig3", (
            Sweep(gaps, "n_labelled", "performance gap against N", "gap (mean squared difference)",
                  vlines=((100, "N = m = 100"),)),
            Sweep(losses, "n_labelled", "test loss against N", "mean squared error"),
        ), "Figure 3: gap to the best predictor against N, m = 100, τ = 0.01"),),
        columns=(COLUMNS[1], COLUMNS[2], ("val/best_loss", "best loss"), ("val/ridge_gap", "gap to ridge"),
                 ("val/best_gap", "gap to best"), ("val/ridge_best_gap", "ridge vs best (closed form)")),
        checks=checks,
        quick=("--data.init_args.token_dim", "32", "--trainer.max_steps", "200", "--trainer.val_check_interval", "20",
               "--trainer.log_every_n_steps", "10"),
        quick_note="token dimension d = 32, 200 steps (full: d = 100, 5000 steps)")


def heads_sweep(model: str, config: str, flag: str, heads: tuple[int, ...], x: str = "step",
                vlines: tuple[tuple[float, str], ...] = ()) -> tuple[tuple[Run, ...], tuple[Curves, Sweep]]:
    """A run of ``config`` per number of heads (set by the override ``flag``), and the panels of their
    training loss: against ``x`` (``Curves.x``), and its end value against H."""
    runs = tuple(Run(model, config, (flag, str(h)), {"heads": h}) for h in heads)
    where = {"model": model}
    return runs, (Curves("train/loss", "training loss", "mean squared error", where, legend=("heads",), x=x),
                  Sweep("train/loss", "heads", "end training loss against H", "mean squared error", where,
                        logx=True, vlines=vlines))


HEADS = (8, 16, 32, 64, 128, 256)
UNSTABLE, UNSTABLE_LR, UNSTABLE_HEADS = "1-layer, lr 3e-3", 3e-3, (64, 1024)
UNSTABLE_RUN = ("--model.init_args.optimizer.init_args.lr", str(UNSTABLE_LR), "--trainer.max_steps", "300",
                "--trainer.val_check_interval", "30", "--trainer.log_every_n_steps", "1")
UNSTABLE_NOTE = (
    "Too many heads (the caption: they 'lead to instability') is a matter of H × step size. At the start every "
    "head attends alike, so the read-outs w of all H heads move together, and Adam moves each entry by about the "
    "step size: the prediction moves by about H γ² lr a step, and from H × lr ≈ 1 the first steps overshoot. The "
    "second figure shows it at lr 3e-3, H = 1024 against H = 64. At this config's lr 1e-4 it takes H ≈ 16000, "
    "too large to train in full here (Q alone holds H·d² = 1.6·10⁸ numbers). The search behind "
    "it (this code, seed 0, training loss; 'peak': the loss rising in the first steps above its start, 20.6): "
    "Adam lr 1e-4, mean of steps 200–300: H = 64 0.79, 256 0.53, 1024 0.53; H = 4096 0.57 (steps 65–95), no "
    "peak (5.6 at step 7); H = 16384 (8 steps run): 25.2 at step 1, then 12.9, 14.4, 12.8, 7.7, 6.7, 7.0; "
    "lr 1e-3: H = 64 0.54, 256 0.56, 1024 0.62, "
    "no peak; lr 3e-3: H = 64 0.58, 256 0.62 (peak 19.0), 1024 0.81 (peak 111); lr 1.2e-2, H = 256: peak 587; "
    "lr 4.8e-2, H = 64: peak 915. Plain gradient descent (torch.optim.SGD, the paper's analysis) at lr 0.1 "
    "trains H = 64 and 256 (0.55 and 0.59 after 200 steps) and diverges at H = 1024 (non-finite at step 14); "
    "at lr 0.3 already H = 64 diverges. A diverging run is a failed run here, so the experiment shows the "
    "overshoot with Adam, where the run recovers, but more slowly than with fewer heads.")


def fig4() -> Experiment:
    paper, fast = {"model": "1-layer"}, {"model": UNSTABLE}
    checks = (
        Check({**paper, "heads": 8}, "train/loss", Ref("train/loss", {**paper, "heads": 64}, scale=2.0),
              "too few heads (H < N = 30) stall: H = 8 above 2 × the loss of H = 64", kind="above"),
        Check({**paper, "heads": 16}, "train/loss", Ref("train/loss", {**paper, "heads": 64}),
              "H = 16 < N above H = 64", kind="above"),
        Check({**fast, "heads": 1024}, "train/loss", Ref("train/loss", at="first", scale=2.0),
              "too many heads for the step size (H × lr ≈ 3): the loss jumps above 2 × its start", at="max",
              kind="above"),
        Check({**fast, "heads": 64}, "train/loss", Ref("train/loss", at="first"),
              "H × lr ≈ 0.2: the loss never rises above its start", at="max", tol=1e-6),
        Check({**fast, "heads": 1024}, "val/loss", Ref("val/loss", {**fast, "heads": 64}, scale=1.2),
              "and converges more slowly: test loss above 1.2 × H = 64's", kind="above"),
    )
    runs, panels = heads_sweep("1-layer", "regression/fig4-heads.yaml", "--model.init_args.heads", HEADS,
                               vlines=((30, "H = N = 30"),))
    unstable = tuple(Run(UNSTABLE, "regression/fig4-heads.yaml", ("--model.init_args.heads", str(h), *UNSTABLE_RUN),
                         {"heads": h}) for h in UNSTABLE_HEADS)
    return Experiment(
        "regression-fig4", "1-layer training loss against the number of heads H", PAPER + ", Figure 4",
        runs=runs + unstable,
        figures=(Figure("regression-fig4", panels, "Figure 4: one-layer model, number of heads H (N = 30)"),
                 Figure("regression-fig4-instability",
                        tuple(Curves(metric, f"lr {UNSTABLE_LR:g}: {title}", "mean squared error", fast,
                                     legend=("heads",))
                              for metric, title in (("train/loss", "training loss"), ("val/loss", "test loss"))),
                        "Figure 4: too many heads for the step size (H × lr ≈ 3) overshoot")),
        columns=COLUMNS[:3] + COLUMNS[6:7], checks=checks,
        quick=("--trainer.max_steps", "400", "--trainer.val_check_interval", "40", "--trainer.log_every_n_steps", "10"),
        run_quick={UNSTABLE: ("--trainer.max_steps", "60", "--trainer.val_check_interval", "10",
                              "--trainer.log_every_n_steps", "1")},
        quick_note=f"400 steps (full: 5000); lr {UNSTABLE_LR:g}: 60 steps (full: 300)", note=UNSTABLE_NOTE)


HEADS_4L = (1, 2, 4, 8, 16, 32)


def fig5() -> Experiment:
    checks = (
        Check({"heads": 1}, "train/loss", Ref("train/loss", {"heads": 8}, scale=2.0),
              "few heads suffice: H = 1 within 2 × the loss of H = 8", kind="below"),
    )
    runs, panels = heads_sweep("4-layer transformer", "regression/fig5-4layer-heads.yaml", "--model.init_args.n_heads",
                               HEADS_4L, x="time")
    return Experiment(
        "regression-fig5", "4-layer transformer against the number of heads, fixed wall-clock budget",
        PAPER + ", Figure 5",
        runs=runs,
        figures=(Figure("regression-fig5", panels,
                        "Figure 5: 4-layer transformer, heads at a fixed wall-clock budget"),),
        columns=COLUMNS[:3], checks=checks,
        quick=(*FOUR_LAYER_SMALL, "--trainer.max_time", "00:00:00:05", "--trainer.val_check_interval", "10",
               "--trainer.log_every_n_steps", "5"),
        quick_note="5 s per run; d_model 32, d_ff 64, batch 16 (full: 100 s; d_model 256, d_ff 512, batch 256)",
        note="A wall-clock budget measures the machine as much as the model: compare runs of one invocation only "
             "(with --jobs 2 each run shares the CPU with another).")


REGRESSION_EXPERIMENTS = (fig2, fig3, fig4, fig5)
