"""Every YAML in configs/ instantiates and runs one fast_dev_run step (no config rots)."""

import pytest

from conftest import CONFIGS, ROOT


def test_there_are_configs_for_both_families():
    names = {p.relative_to(ROOT / "configs").as_posix() for p in CONFIGS}
    for model in ["reparam-linear-fa", "reparam-softmax-fa", "reparam-linear-w-fa", "origin-linear-fa",
                  "origin-softmax-f"]:
        assert f"recall/fig1/{model}.yaml" in names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.relative_to(ROOT / "configs").as_posix())
def test_config_runs_fast_dev_run(config, run_cli):
    cli = run_cli("fit", "--config", str(config), "--trainer.fast_dev_run", "true")
    assert cli.trainer.global_step == 1
    assert cli.trainer.callback_metrics["train/loss"].isfinite()
