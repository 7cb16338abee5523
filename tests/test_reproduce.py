"""``icrl-reproduce``: the experiment list, a tiny end-to-end run, parallel jobs, reuse, and the results table."""

import math
import re

import numpy as np
import pytest

from icrl.recall.task import entropy
from icrl.reproduce import experiments, main, parse_fit_args, plots
from icrl.reproduce.experiments import Check, label, matches
from icrl.reproduce.plan import configs_dir, plan
from icrl.reproduce.results import check_rows, section, value_rows
from icrl.scalars import read_scalars
from icrl.sweep.tables import end_values, fmt_values

EXPERIMENTS = ["recall-fig1", "recall-eta", "recall-alpha-sweep", "recall-finite", "recall-finite-fig",
               "recall-margins", "recall-margins-fig", "recall-context-length", "recall-rate", "recall-finite-n",
               "regression-fig2", "regression-fig3", "regression-fig4", "regression-fig5", "regression-gd-rate",
               "regression-heads-vs-n"]
TINY = ["--quick", "--seeds", "0", "--steps", "30", "--no-progress"]


def test_list_names_every_experiment(capsys):
    main(["--list"])
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == EXPERIMENTS


def test_every_point_has_a_config_and_every_check_selects_one_point():
    root = configs_dir()
    for exp in experiments().values():
        for p in exp.points:
            assert (root / p.config).exists(), (exp.name, p.config)
        for check in exp.checks:
            assert sum(matches(p, check.where) for p in exp.points) == 1, (exp.name, check)
        labels = [label(p) for p in exp.points]
        assert len(set(labels)) == len(labels), exp.name


@pytest.fixture(scope="module")
def fig1_tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("fig1")
    main(["recall-fig1", *TINY, "--out", str(out)])
    return out


def test_recall_fig1_writes_pngs_and_results(fig1_tiny):
    assert sorted(p.name for p in (fig1_tiny / "figures").glob("*.png")) == ["recall-fig1-loss.png",
                                                                            "recall-fig1-probabilities.png"]
    text = (fig1_tiny / "results.md").read_text()
    for model in ("Reparam-Linear-FA", "Reparam-Softmax-FA", "Reparam-Linear-W-FA", "Origin-Linear-FA",
                  "Origin-Softmax-F"):
        for alpha in ("0.0", "0.5"):
            assert f"| {model} (α={alpha}) | 30 |" in text  # end-value row, 30 steps
    assert "| Reparam-Linear-FA (α=0.5) | `val/bayes_gap` |" in text and "Bayes risk H(0.5) = ln 2" in text


def test_recall_fig1_numbers_follow_the_closed_form(fig1_tiny):
    # noisy Reparam-Linear-FA: Λ grows by η = 0.1 per step, so after 30 steps
    # L = H(α) + ln(1 + (1-α)(N-2) e^{-Λ}) with Λ = 3, on any validation set (docs/science.md §R.6)
    text = (fig1_tiny / "results.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| Reparam-Linear-FA (α=0.5) | 30 |"))
    loss = float(row.split("|")[4])
    assert loss == pytest.approx(math.log(2) + math.log(1 + 0.5 * 58 * math.exp(-3)), abs=1e-3)


def test_reuse_trains_nothing_again(fig1_tiny, monkeypatch):
    from icrl.sweep import backends

    def fail(job):
        raise AssertionError(f"retrained {job['dir']}")

    monkeypatch.setattr(backends, "train_job", fail)
    main(["recall-fig1", *TINY, "--out", str(fig1_tiny), "--reuse"])
    assert "12 runs (12 reused from earlier invocations)" in (fig1_tiny / "results.md").read_text()


def test_parallel_jobs_match_in_process(tmp_path):
    main(["recall-margins", *TINY, "--steps", "10", "--jobs", "2", "--out", str(tmp_path / "par")])
    main(["recall-margins", *TINY, "--steps", "10", "--out", str(tmp_path / "seq")])
    assert (tmp_path / "par" / "figures" / "recall-margins.png").exists()
    tables = [re.sub(r"Command: .*|took \d+ s|trained in \d+ s", "", (tmp_path / d / "results.md").read_text())
              for d in ("par", "seq")]
    assert tables[0] == tables[1]


def logged(out, run: str, metric: str, *setting: str) -> list[list[float]]:
    """``[steps, values]`` of ``metric`` in the one seed-0 run of ``out/runs/<run>`` whose point has ``setting``s
    (``"alpha=0.2"``) among its overrides."""
    (found,) = [d for d in (out / "runs" / run).glob("*/seed0-*") if set(setting) <= set(d.parent.name.split(","))]
    return read_scalars(found)[metric][:2]


EIGHT_STEPS = ["--quick", "--seeds", "0", "--no-progress", "--fit-args=--trainer.max_steps 8"]  # the epoch cadence kept


def test_recall_finite_fig_validates_every_epoch_on_the_population_set(tmp_path):
    main(["recall-finite-fig", *EIGHT_STEPS, "--out", str(tmp_path)])
    assert [p.name for p in (tmp_path / "figures").glob("*.png")] == ["recall-finite-fig.png"]
    text = (tmp_path / "results.md").read_text()
    assert "Claims (" in text and "| Origin-ReLU-FA (α=0.5) | `val/ood_loss` |" in text
    for model in ("Reparam-ReLU-FA", "Reparam-ReLU-W-FA", "Origin-ReLU-FA"):
        assert f"| {model} (α=0.5) | 8 |" in text
    # two epochs of 4 steps: one validation and one training-loss point after each
    assert logged(tmp_path, "recall-finite-reparam-relu-fa", "val/loss")[0] == [3, 7]
    assert logged(tmp_path, "recall-finite-origin-relu-fa", "train/loss")[0] == [3, 7]


def test_recall_margins_fig_logits_follow_the_reparameterization(tmp_path):
    from icrl.recall import RecallDataModule

    main(["recall-margins-fig", *EIGHT_STEPS, "--fit-args=--data.n_val 256", "--out", str(tmp_path)])
    assert sorted(p.name for p in (tmp_path / "figures").glob("*.png")) == [
        "recall-margins-fig-attention.png", "recall-margins-fig-feedforward.png"]
    # Reparam-Linear-FA after 8 steps: Λ = 0.8, so ξ_A = Λ E(y) and ξ_F = (γ̂ + Λ) E(τ), γ̂ from the sample's
    # empirical α̂
    for alpha in (0.2, 0.5, 0.8):
        hat = RecallDataModule(alpha=alpha, context_length=64, n_samples=2048, seed=0).task["alpha_hat"]
        gamma = math.log(hat / (1 - hat))
        run = "recall-finite-reparam-linear-fa"
        expected = {"val/logit_attn_y": 0.8, "val/max_logit_attn": 0.8, "val/logit_ff_tau": gamma + 0.8,
                    "val/max_logit_ff": max(gamma + 0.8, 0.0)}
        for metric, value in expected.items():
            assert logged(tmp_path, run, metric, f"alpha={alpha}")[1][-1] == pytest.approx(value, abs=1e-5), (alpha, metric)
    rows = [line for line in (tmp_path / "results.md").read_text().splitlines()
            if line.startswith("| Reparam-Linear-FA (α=0.2) | `val/logit_ff_tau` |")]
    # γ̂ + Λ < 0 = max_j ξ_F,j: τ is not yet the feed-forward block's argmax
    assert len(rows) == 1 and rows[0].endswith("| ✗ |")


def test_regression_fig4_too_many_heads_for_the_step_size_overshoot(tmp_path):
    from icrl.regression import TemplateRegressionDataModule

    main(["regression-fig4", "--quick", "--seeds", "0", "--steps", "6", "--no-progress", "--out", str(tmp_path)])
    assert sorted(p.name for p in (tmp_path / "figures").glob("*.png")) == ["regression-fig4-instability.png",
                                                                           "regression-fig4.png"]
    rows = {tuple(r.split(" | ")[:2]): r for r in (tmp_path / "results.md").read_text().splitlines()
            if r.startswith("| 1-layer, lr 3e-3")}
    assert rows["| 1-layer, lr 3e-3 (H=1024)", "`train/loss` (max)"].endswith("| ✓ |")  # the overshoot
    assert rows["| 1-layer, lr 3e-3 (H=64)", "`train/loss` (max)"].endswith("| ✓ |")  # none
    assert rows["| 1-layer, lr 3e-3 (H=1024)", "`val/loss`"].endswith("| ✓ |")
    # w = 0 at the start: the first logged loss (the checks' "first") is the first batch's mean squared target,
    # for every H
    target = next(iter(TemplateRegressionDataModule(n_train=10000).train_dataloader()))["target"]  # the config's task
    for h in (8, 1024):
        assert logged(tmp_path, "regression-fig4-heads", "train/loss", f"heads={h}")[1][0] == pytest.approx(
            target.square().mean().item(), rel=1e-5)


def test_unknown_experiment_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["recall-fig9", "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "recall-fig1" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--fit-args", "regression/fig2-4layer:--data.batch_size 16"],
     "--fit-args pattern 'regression/fig2-4layer' matches none of the configs"),
    (["--seeds", "0", "0"], "--seeds must be distinct, got [0, 0]"),
    (["--configs", "no-such-dir"], "no configs directory at no-such-dir"),
], ids=["pattern matching no config", "repeated seed", "missing configs directory"])
def test_bad_arguments_are_refused_before_any_run(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["regression-fig2", *args, "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


# --- the results table, on hand-made numbers --------------------------------------------------

def seeds(metric_values: dict[str, list[float]]) -> dict[int, dict]:
    """Fake worker results: seed s logged a two-point curve ending at values[s]."""
    n = len(next(iter(metric_values.values())))
    return {s: {"scalars": {m: [[9, 19], [1.0, v[s]]] for m, v in metric_values.items()}} for s in range(n)}


def test_end_values_and_formatting():
    data = seeds({"val/loss": [0.69, 0.70, 0.71]})
    np.testing.assert_allclose(end_values(data, "val/loss"), [0.69, 0.70, 0.71])
    assert fmt_values(end_values(data, "val/loss")) == "0.7000 ± 0.0082"
    assert fmt_values(np.array([2.5e-9])) == "2.50e-09"
    assert fmt_values(end_values(data, "val/ood_loss")) == "—"  # never logged
    assert fmt_values(np.array([1.0, math.nan])) == "1.0000 (1/2 seeds)"


def test_checks_compare_the_mean_over_seeds():
    exp = experiments()["recall-fig1"]
    points = {label(p): p for p in exp.points}
    data = {p: {} for p in exp.points}
    data[points["Reparam-Linear-FA (α=0.5)"]] = seeds({"val/loss": [0.6931, 0.6932, 0.6933],
                                                     "val/bayes_gap": [1e-4, 2e-4, 3e-4],
                                                     # two seeds within 1e-3, but the mean 1.5e-3 is not
                                                     "val/ood_bayes_gap": [5e-4, 5e-4, 3.5e-3],
                                                     "val/p_noise_ood": [0.49, 0.50, 0.51]})
    data[points["Origin-Linear-FA (α=0.0)"]] = seeds({"val/loss": [0.0, 0.0, 0.0], "val/ood_loss": [13.9, 14.0, 14.1]})
    rows = {(r[0], r[1]): r for r in check_rows(exp, data)}
    assert rows["Reparam-Linear-FA (α=0.5)", "`val/bayes_gap`"][3:] == ["0 ± 0.001", "Bayes risk H(0.5) = ln 2", "✓"]
    assert rows["Reparam-Linear-FA (α=0.5)", "`val/ood_bayes_gap`"][-1] == "✗"
    assert rows["Reparam-Linear-FA (α=0.5)", "`val/p_noise_ood`"][-1] == "✓"
    assert rows["Origin-Linear-FA (α=0.0)", "`val/ood_loss`"][2:4] == ["14.00 ± 0.082", "> 1"]
    assert rows["Origin-Linear-FA (α=0.0)", "`val/ood_loss`"][-1] == "✓"
    assert rows["Reparam-Softmax-FA (α=0.0)", "`val/loss`"][2] == "—"  # not run: shown as missing, never ✓
    assert rows["Reparam-Softmax-FA (α=0.0)", "`val/loss`"][-1] == "✗"
    header, values = value_rows(exp, data)
    assert header[:3] == ["run", "steps", "Bayes risk"]
    assert values[6][:4] == ["Reparam-Linear-FA (α=0.5)", "20", "0.6931", "0.6932 ± 8.2e-05"]


def test_rate_checks_read_the_log_slope_in_the_asymptotic_window():
    exp = experiments()["recall-rate"]
    steps = list(range(0, 600, 5))
    data = {}
    for p in exp.points:
        rate = p.params["eta"] * (1 if p.params["alpha"] else 1 / math.sqrt(5))
        if p.params == {"alpha": 0.5, "eta": 0.2}:
            rate *= 0.9  # a slope 10% off the theory's
        # the gap above the window (ln 60 at the start) and the float floor below it must not bend the fit
        gap = [min(4.1, 3 * math.exp(-rate * t)) + 1e-7 for t in steps]
        data[p] = {0: {"scalars": {"val/bayes_gap": [steps, gap]}}}
    rows = {r[0]: r for r in check_rows(exp, data)}
    assert rows["Reparam-Linear-FA (α=0.0, η=0.1)"][2:4] == ["-0.0447", "-0.04472 ± 5%"]
    assert [rows[label][-1] for label in rows].count("✗") == 1 and rows["Reparam-Linear-FA (α=0.5, η=0.2)"][-1] == "✗"


def test_check_kinds():
    assert Check({}, "m", 0.0, "", tol=0.01).holds(0.005)
    assert not Check({}, "m", 0.0, "", tol=0.01).holds(0.02)
    assert Check({}, "m", 1.0, "", kind="above").holds(1.5) and not Check({}, "m", 1.0, "", kind="above").holds(0.5)
    assert Check({}, "m", 1.0, "", kind="below").holds(0.5)
    assert not Check({}, "m", 1.0, "", kind="below").holds(math.nan)


def test_plan_shares_points_and_scopes_fit_args():
    exps = experiments()
    scoped = [parse_fit_args("regression/fig2-4layer*:--data.init_args.batch_size 8"),
              ("recall/*", ["--trainer.callbacks+=icrl.recall.images.RecallImages"])]
    points = plan([exps["recall-fig1"], exps["recall-margins"], exps["regression-fig2"]], quick=True,
                             fit_args=scoped)
    # recall-margins' runs are recall-fig1's: the same point, trained once per seed
    assert points["recall-margins", "Reparam-Linear-FA (α=0.5)"] == points["recall-fig1", "Reparam-Linear-FA (α=0.5)"]
    assert len(set(points.values())) == 12 + 3  # recall-fig1's six models × 2 α, regression-fig2's three
    assert points["recall-fig1", "Reparam-Linear-FA (α=0.5)"].name == "recall-fig1-reparam-linear-fa/alpha=0.5"
    four = points["regression-fig2", "4-layer transformer"].args
    one = points["regression-fig2", "1-layer, H = 64"].args
    assert four[-2:] == ("--data.init_args.batch_size", "8") and "8" not in one
    assert "--model.init_args.d_model" in four and "--model.init_args.d_model" not in one  # the 4-layer's --quick
    fig4 = plan([exps["regression-fig4"]], quick=True)
    # --quick's globs match point names: the lr 3e-3 points get their own 60 steps after the shared 400
    assert fig4["regression-fig4", "1-layer, lr 3e-3 (H=64)"].args[-6:-4] == ("--trainer.max_steps", "60")
    assert fig4["regression-fig4", "1-layer (H=64)"].args[-6:-4] == ("--trainer.max_steps", "400")
    assert all(("RecallImages" in " ".join(p.args)) == ("/recall/" in p.config) for p in points.values())


def test_a_failed_run_is_reported_and_the_rest_still_written(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["recall-margins", *TINY, "--steps", "5", "--out", str(tmp_path),
              # plain SGD at lr 1e38 overflows the Origin model's logits: a non-finite loss
              "--fit-args", "recall/fig1/origin-*:--model.init_args.optimizer torch.optim.SGD "
                            "--model.init_args.optimizer.init_args.lr 1e38"])
    assert "1 run(s) failed" in str(exit_info.value.code)
    text = (tmp_path / "results.md").read_text()
    assert [line.split(" | ")[0] for line in text.splitlines() if "(failed:" in line] == [
        "| Origin-Linear-FA (α=0.5) (failed: seed 0)"]
    assert "| Reparam-Linear-FA (α=0.5) | 5 |" in text


# --- the figures, on hand-made numbers -----------------------------------------------------------

def drawn(exp, data, out, monkeypatch) -> dict:
    """Draw ``exp`` through ``plots.draw_experiment``: its matplotlib figures, by PNG name, as saved."""
    from matplotlib.figure import Figure

    figures, save = {}, Figure.savefig

    def keep(fig, path, **kwargs):
        figures[path.stem] = fig
        save(fig, path, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    paths = plots.draw_experiment(exp, data, out)
    assert [p.name for p in paths] == [f"{f.name}.png" for f in exp.figures] and all(p.exists() for p in paths)
    return figures


def test_figure_legend_and_title_fit_inside_the_figure(tmp_path, monkeypatch):
    exp = experiments()["recall-fig1"]
    # gaps of 0 are drawn at the floor, so the title carries its note too
    metrics = ("val/bayes_gap", "val/ood_bayes_gap", "val/p_output_ood", "val/p_noise_ood")
    fig = drawn(exp, {p: seeds({m: [0.0, 1e-3] for m in metrics}) for p in exp.points}, tmp_path,
                monkeypatch)["recall-fig1-loss"]
    (legend,) = fig.legends
    assert len(legend.get_texts()) == 6  # the five models and the value-scaled softmax
    assert "drawn at 1e-07" in fig.get_suptitle()
    page = fig.bbox
    for artist in (legend, fig._suptitle):
        box = artist.get_window_extent()
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1, artist


def test_sweep_points_beside_a_theory_curve_are_not_joined(tmp_path, monkeypatch):
    exp = experiments()["recall-alpha-sweep"]
    # every model at the Bayes risk: segments between α = 0.2, 0.5, 0.8 would run below the concave H(α)
    data = {p: seeds({m: [entropy(p.params["alpha"])] * 2 for m in ("val/expected_loss", "val/ood_expected_loss",
                                                                     "val/p_noise_ood")}) for p in exp.points}
    ax = drawn(exp, data, tmp_path, monkeypatch)["recall-alpha-sweep"].axes[0]
    runs = {c.get_label(): c.lines[0] for c in ax.containers}
    assert sorted(runs) == ["Origin-Linear-FA", "Reparam-Linear-FA", "Reparam-Linear-W-FA"]
    for line in runs.values():
        assert line.get_linestyle() == "None" and line.get_marker() == "o"
        np.testing.assert_allclose(line.get_ydata(), [entropy(a) for a in (0.2, 0.5, 0.8)])
    (theory,) = [line for line in ax.lines if line.get_label() == "Bayes risk H(α)"]
    np.testing.assert_allclose(theory.get_ydata(), [entropy(a) for a in theory.get_xdata()])
    # without a theory curve the points are joined
    exp = experiments()["regression-heads-vs-n"]
    ax = drawn(exp, {p: seeds({"val/loss": [1.0, 2.0], "val/ridge_gap": [0.1, 0.2]}) for p in exp.points}, tmp_path,
               monkeypatch)["regression-heads-vs-n"].axes[1]
    assert sorted(c.get_label() for c in ax.containers) == ["N = 10", "N = 30", "N = 60"]
    assert all(c.lines[0].get_linestyle() == "-" for c in ax.containers)


def test_regression_fig2_unseen_examples_panel_has_its_ridge_line(tmp_path, monkeypatch):
    exp = experiments()["regression-fig2"]
    losses = ("train/loss", "val/loss", "val/unseen_example_loss", "val/unseen_task_loss", "val/ridge_loss",
              "val/unseen_task_ridge_loss")
    data = {p: seeds({**{m: [1.0, 1.0] for m in losses}, "val/unseen_example_ridge_loss": [0.4 + 0.1 * i, 0.6 + 0.1 * i]})
            for i, p in enumerate(exp.points)}
    fig = drawn(exp, data, tmp_path, monkeypatch)["regression-fig2"]
    ridges = {ax.get_title(): [line.get_ydata()[0] for line in ax.lines if line.get_label().startswith("ridge")]
              for ax in fig.axes if ax.get_visible()}
    # the mean end value over seeds and runs: (0.5 + 0.6 + 0.7) / 3
    assert ridges["unseen examples (the K − N unlabelled tokens)"] == [pytest.approx(0.6)]
    assert all(len(lines) == 1 for title, lines in ridges.items() if "distance to ridge" not in title)
    # the 4-layer curves may stop early: the note under the figure says why
    text = section(exp, data, [], False, [0, 1])
    assert "The 4-layer baseline at the paper's size is a GPU job" in text and "--fit-args" in text
