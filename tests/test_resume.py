"""A resumed fit ends where the uninterrupted one does, in each family: the checkpoint a short fit ends with
(after a validation), the stream position and tables it keeps, equal metrics and weights; and a negative
control, a resume whose stream restarts at batch 0, that ends elsewhere."""

from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import ROOT, end_metrics

RECALL = ["--data.context_length", "16", "--data.batch_size", "8", "--data.n_val", "64",
          "--data.alpha", "0.2"]  # α = 0.2, not 0.5: at 0.5 Reparam's loss is the same for every prompt
REGRESSION = ["--data.n_tokens", "12", "--data.n_labelled", "4", "--data.token_dim", "6", "--data.n_basis", "3",
              "--data.noise_var", "0.1", "--data.batch_size", "8", "--data.n_train", "64", "--data.n_val", "24",
              "--model.optimizer.lr", "0.01"]
CONFIGS = {  # name: arguments, the batch entry a training stream draws
    "recall-origin": (["--config", str(ROOT / "configs/recall/fig1/origin-linear-fa.yaml"), *RECALL], "tokens"),
    "recall-reparam": (["--config", str(ROOT / "configs/recall/fig1/reparam-linear-fa.yaml"), *RECALL], "tokens"),
    "regression-one-layer": (["--config", str(ROOT / "configs/regression/fig2-1layer.yaml"), *REGRESSION,
                              "--model.heads", "4", "--model.beta", "0.3"], "y"),
    "regression-transformer": (["--config", str(ROOT / "configs/regression/fig2-4layer.yaml"), *REGRESSION,
                                "--model.n_layers", "1", "--model.d_model", "8", "--model.d_ff", "16",
                                "--model.n_heads", "2"], "y"),
}


def max_weight_diff(a: Path, b: Path) -> float:
    sa, sb = (torch.load(p, weights_only=True)["state_dict"] for p in (a, b))
    assert sa.keys() == sb.keys()
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_a_resumed_fit_ends_where_the_uninterrupted_one_does(config, run_cli, tmp_path):
    args, key = CONFIGS[config]
    common = [*args, "--trainer.val_check_interval", "5"]
    half = run_cli("fit", *common, "--trainer.max_steps", "7")
    log_dir = half.trainer.logger.log_dir
    ckpt = Path(half.trainer.checkpoint_callback.last_model_path)
    assert ckpt == Path(log_dir) / "checkpoints" / "last.ckpt"
    events = EventAccumulator(log_dir, size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("val/loss")] == [4, 6]  # after steps 5 and 7: the end validates too

    # the checkpoint holds the step, the stream position and the data module's tables (regression's v, f)
    state = torch.load(ckpt, weights_only=True)  # before the resumed run, logging into its folder, rewrites it
    data, data_state = half.datamodule, state[type(half.datamodule).__name__]
    assert state["global_step"] == 7 and data_state["batches_consumed"] == 7
    for name in data_state.keys() - {"batches_consumed"}:
        assert torch.equal(data_state[name], getattr(data, name)), name
    stream = [batch[key] for _, batch in zip(range(8), data.train_dataloader())]
    data.load_state_dict(data_state)
    assert torch.equal(next(iter(data.train_dataloader()))[key], stream[7])  # batches 0-6 were consumed

    resumed = run_cli("fit", *common, "--trainer.max_steps", "14", "--ckpt_path", str(ckpt))
    assert resumed.trainer.global_step == 14 and resumed.trainer.logger.log_dir == log_dir
    full = run_cli("fit", *common, "--trainer.max_steps", "14")
    a, b = end_metrics(resumed), end_metrics(full)
    assert a.keys() == b.keys() >= {"train/loss", *(f"val/{name}" for d in full.model.eval_metrics for name in d)}
    for name in b:
        assert a[name] == pytest.approx(b[name], abs=1e-6), name
    assert max_weight_diff(ckpt, Path(full.trainer.checkpoint_callback.last_model_path)) <= 1e-6

    # negative control: resumed with the stream restarted at batch 0, the fit ends elsewhere (so the check can
    # fail). Not Reparam: its λ moves by lr each step whatever the batch (NormalizedGD on one scalar), so there
    # only the last batch's train/loss sees the stream, equal for two batches with as many noise targets.
    if config == "recall-reparam":
        return
    data_state["batches_consumed"] = 0
    torch.save(state, restarted := tmp_path / "restarted.ckpt")
    other = end_metrics(run_cli("fit", *common, "--trainer.max_steps", "14", "--ckpt_path", str(restarted)))
    assert any(other[name] != pytest.approx(b[name], abs=1e-6) for name in b)
