"""Every YAML in configs/ instantiates and runs one fast_dev_run step (no config rots)."""

import pytest

from conftest import CONFIGS, ROOT


def test_there_are_configs_for_both_families():
    names = {p.relative_to(ROOT / "configs").as_posix() for p in CONFIGS}
    for model in ["reparam-linear-fa", "reparam-softmax-fa", "reparam-linear-w-fa", "origin-linear-fa",
                  "origin-softmax-f"]:
        assert f"recall/fig1/{model}.yaml" in names
    for figure in ["fig2-1layer", "fig2-4layer", "fig3-gap-vs-n", "fig4-heads", "fig5-4layer-heads"]:
        assert f"regression/{figure}.yaml" in names


# the 4-layer baseline runs at a small batch (a paper-size step is slow on a CPU, docs/performance.md §5), and
# a config documenting a sweep at one of the swept values
OVERRIDES = {"4layer": ["--data.batch_size", "4", "--data.n_val", "4"], "fig3-gap-vs-n": ["--data.n_labelled", "50"],
             "fig4-heads": ["--model.heads", "8"], "fig5-4layer-heads": ["--model.n_heads", "4"]}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.relative_to(ROOT / "configs").as_posix())
def test_config_runs_fast_dev_run(config, run_cli):
    overrides = [arg for key, args in OVERRIDES.items() if key in config.name for arg in args]
    cli = run_cli("fit", "--config", str(config), "--trainer.fast_dev_run", "true", *overrides)
    assert cli.trainer.global_step == 1
    assert cli.trainer.callback_metrics["train/loss"].isfinite()
    assert cli.model.hparams.task == cli.datamodule.task  # linked from the data settings
