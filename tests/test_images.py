"""``RecallImages``: attention and margin pictures in TensorBoard, every validation."""

import re

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import ROOT
from icrl.recall import RecallTask, sample_recall
from icrl.recall.images import RecallImages, attention_figure, bigram_positions, logits_figure


def test_bigram_positions_mark_both_bigrams_of_a_noisy_prompt():
    task = RecallTask(vocab_size=20, context_length=16, alpha=0.5)
    batch = sample_recall(task, 64, torch.Generator().manual_seed(0))
    for tokens, y in zip(batch["tokens"], batch["output"]):
        triggers, after = bigram_positions(tokens)
        assert len(triggers) == 2 and all(p < 15 for p in triggers)  # (q, y) and (q, τ), never the last position
        assert sorted(int(tokens[p]) for p in after) == sorted([int(y), task.noise_token])


def test_figures_draw_from_a_batch():
    task = RecallTask(vocab_size=20, context_length=16, alpha=0.5)
    batch = sample_recall(task, 8, torch.Generator().manual_seed(0))
    weights = torch.rand(8, 16)
    fig = attention_figure(task, batch["tokens"][0], weights[0], "test: ")
    assert "trigger q" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    fig = logits_figure(task, torch.randn(8, 20), torch.randn(8, 20), batch["output"])
    assert len(fig.axes) == 2


def test_fit_logs_attention_and_logit_images(run_cli):
    cli = run_cli("fit", "--config", str(ROOT / "configs/recall/fig1/reparam-linear-fa.yaml"), "--data.alpha", "0.5",
                  "--data.context_length", "32", "--data.n_val", "128", "--trainer.max_steps", "20",
                  "--trainer.val_check_interval", "10", "--trainer.callbacks+=icrl.recall.images.RecallImages")
    acc = EventAccumulator(cli.trainer.logger.log_dir, size_guidance={"images": 0})
    acc.Reload()
    assert set(acc.Tags()["images"]) == {"recall/attention", "recall/logits"}
    assert [e.step for e in acc.Images("recall/attention")] == [10, 20]  # every validation, not the sanity check


def test_every_n_is_validated():
    with pytest.raises(ValueError, match="every_n"):
        RecallImages(every_n=0)


def test_a_prompt_beyond_the_first_validation_batch_is_refused(run_cli, capsys):
    with pytest.raises(SystemExit) as exit_info:  # found in the callback's setup: a CLI error, before any step
        run_cli("fit", "--config", str(ROOT / "configs/recall/fig1/reparam-linear-fa.yaml"), "--data.n_val", "64",
                "--trainer.max_steps", "2", "--trainer.callbacks+=icrl.recall.images.RecallImages",
                "--trainer.callbacks.prompt=64")
    assert exit_info.value.code == 2
    assert re.search(r"prompt must be < 64, .*got prompt=64", capsys.readouterr().err)
