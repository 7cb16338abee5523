import json
import os
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path

import pytest
import torch

from icrl.recall import LinearAttention, Origin, ReLUAttention, Reparam, ReparamW, SoftmaxAttention

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))

# The recall tests' one registry: every attention, every parameterization (the later version's value-scaled ones too)
ATTENTIONS = {"linear": LinearAttention, "relu": ReLUAttention, "softmax": SoftmaxAttention}
PARAMETERIZATIONS = {"Origin": Origin, "Reparam": Reparam, "ReparamW": ReparamW,
                     "Reparam(value_scale)": partial(Reparam, value_scale=True),
                     "ReparamW(value_scale)": partial(ReparamW, value_scale=True)}

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
    return [sys.executable, "-m", "icrl"]


DDP_PROBE = textwrap.dedent('''
    import json, os
    from lightning.pytorch import Callback

    class Probe(Callback):
        """Writes each rank's first training batch (its ``key`` entry) and final validation metrics to JSON."""
        def __init__(self, out: str, key: str):
            self.out, self.key, self.first = out, key, None
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if self.first is None:
                self.first = batch[self.key][:2].tolist()
        def on_validation_end(self, trainer, pl_module):
            metrics = {k: v.item() for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            with open(os.path.join(self.out, f"rank{trainer.global_rank}.json"), "w") as f:
                json.dump({"first": self.first, "metrics": metrics}, f)
''')


@pytest.fixture
def ddp_fit(icrl_cmd, tmp_path):
    """Run ``icrl fit ARGS`` as two CPU DDP processes; return, per rank, its first training batch's
    ``key`` entry and its final ``val/*`` metrics, and the run's checkpoint."""

    def run(*args: str, key: str) -> tuple[list[dict], Path]:
        (tmp_path / "probe_ext.py").write_text(DDP_PROBE)
        out = tmp_path / "ddp"
        out.mkdir()
        probe = json.dumps({"class_path": "probe_ext.Probe", "init_args": {"out": str(out), "key": key}})
        proc = subprocess.run(
            [*icrl_cmd, "fit", *args, "--trainer.accelerator", "cpu", "--trainer.devices", "2",
             "--trainer.strategy", "ddp", "--trainer.enable_progress_bar", "false", "--trainer.callbacks+", probe,
             "--trainer.default_root_dir", str(out)],
            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(tmp_path)})
        assert proc.returncode == 0, proc.stderr[-3000:]
        return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)], next(out.rglob("*.ckpt"))

    return run


def end_metrics(cli) -> dict[str, float]:
    """The run's last logged metrics (``callback_metrics``) as floats."""
    return {k: v.item() for k, v in cli.trainer.callback_metrics.items()}
