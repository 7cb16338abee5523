import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))

# 2 cores: more threads than cores makes torch crawl when tests run under load
torch.set_num_threads(1)


@pytest.fixture
def run_cli(tmp_path):
    """Run ``icrl`` in-process (``cli_main``), quietly, with logs under ``tmp_path``; return the CLI."""
    from icrl.cli import cli_main

    def run(*args: str):
        return cli_main([*args, "--trainer.default_root_dir", str(tmp_path),
                         "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"])

    return run


@pytest.fixture
def icrl_cmd():
    """The ``icrl`` command as a user runs it (a subprocess of this interpreter)."""
    return [sys.executable, "-m", "icrl.cli"]
