"""Distribution properties of the recall sampler (docs/science.md §R.2) and of the data module's streams."""

import math

import pytest
import torch

from conftest import ROOT
from icrl.recall import RecallDataModule, RecallTask, entropy, sample_recall
from icrl.recall.data import DEVICE, RecallStream, sample_recall_stacked, sample_recall_torch
from icrl.streams import generator

# the NumPy sampler (the CPU's stream) and torch's (a GPU's, drawn on the device): one law
SAMPLERS = pytest.mark.parametrize("sample", [sample_recall, sample_recall_torch], ids=["numpy", "torch"])


def bigram_positions(tokens, trigger):
    """Positions p < T-1 where the trigger stands (the last position is the query)."""
    return [(row[:-1] == q).nonzero().flatten().tolist() for row, q in zip(tokens, trigger)]


@SAMPLERS
def test_noiseless_samples_have_one_bigram_and_the_trigger_last(sample):
    task = RecallTask(vocab_size=30, n_triggers=3, n_outputs=4, context_length=16)
    b = sample(task, 2000, generator(0))
    z, y = b["tokens"], b["output"]
    q = z[:, -1]
    assert ((q >= 0) & (q < 3)).all()
    assert ((y >= 3) & (y < 7)).all() and (b["target"] == y).all()
    for row, qq, yy, pos in zip(z, q, y, bigram_positions(z, q)):
        assert len(pos) == 1 and pos[0] <= 16 - 3  # exactly one (q, y), p ∈ {0..T-3}
        assert row[pos[0] + 1] == yy
    filler_mask = torch.ones_like(z, dtype=torch.bool)
    filler_mask[:, -1] = False
    assert (z[filler_mask] != task.noise_token).all()  # τ never appears in a noiseless prompt
    assert (z[:, :-1] >= 3).sum() == z[:, :-1].numel() - 2000  # triggers only at the bigram


@SAMPLERS
def test_bigram_position_is_uniform(sample):
    task = RecallTask(vocab_size=30, n_triggers=3, n_outputs=4, context_length=8)
    z = sample(task, 12000, generator(1))["tokens"]
    p = torch.tensor([pos[0] for pos in bigram_positions(z, z[:, -1])])
    freq = torch.bincount(p, minlength=6).float() / len(p)
    assert freq.shape == (6,)  # p ∈ {0, …, T-3}
    assert (freq - 1 / 6).abs().max() < 4 * math.sqrt((1 / 6) * (5 / 6) / 12000)


@SAMPLERS
@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
def test_noisy_samples_have_two_disjoint_bigrams_and_tau_targets_near_alpha(alpha, sample):
    task = RecallTask(alpha=alpha, context_length=12)
    b = sample(task, 20000, generator(2))
    z, y, target = b["tokens"], b["output"], b["target"]
    assert (z[:, -1] == 0).all()
    pos = bigram_positions(z, torch.zeros(len(z), dtype=torch.long))
    assert all(len(p) == 2 and p[1] - p[0] >= 2 for p in pos)  # two bigrams, not overlapping
    nxt = torch.stack([z[i, torch.tensor(p) + 1] for i, p in enumerate(pos[:500])])
    assert ((nxt == task.noise_token).sum(1) == 1).all()  # one (0, τ) bigram …
    assert ((nxt == y[:500, None]).sum(1) == 1).all()  # … and one (0, y) bigram
    assert ((target == y) | (target == task.noise_token)).all()
    freq = (target == task.noise_token).float().mean().item()
    assert abs(freq - alpha) < 4 * math.sqrt(alpha * (1 - alpha) / 20000)


@SAMPLERS
def test_noise_bigram_position_is_uniform_over_non_overlapping_positions(sample):
    task = RecallTask(alpha=0.5, context_length=8)  # p, p' ∈ {0..5}, |p - p'| >= 2
    z = sample(task, 30000, generator(3))["tokens"]
    tau_at = (z == task.noise_token).float().argmax(1) - 1  # p' (τ at p'+1)
    pos = bigram_positions(z, torch.zeros(len(z), dtype=torch.long))
    p = torch.tensor([a if a != b_ else c for (a, c), b_ in zip(pos, tau_at.tolist())])
    for p_val in [0, 2, 5]:
        allowed = [v for v in range(6) if abs(v - p_val) >= 2]
        sel = tau_at[p == p_val]
        freq = torch.bincount(sel, minlength=6).float() / len(sel)
        for v in range(6):
            expected = 1 / len(allowed) if v in allowed else 0.0
            assert abs(freq[v].item() - expected) < 0.05


@SAMPLERS
def test_ood_outputs_lie_outside_the_training_outputs(sample):
    task = RecallTask()
    b = sample(task, 5000, generator(4), ood=True)
    assert ((b["output"] >= 9) & (b["output"] <= 58)).all()
    assert len(b["output"].unique()) == 50


def test_bayes_risks():
    assert entropy(0.0) == 0.0
    assert entropy(0.5) == pytest.approx(math.log(2))
    assert entropy(0.2) == pytest.approx(0.5004, abs=1e-4) and entropy(0.8) == pytest.approx(0.5004, abs=1e-4)
    assert RecallTask(alpha=0.5).bayes_risk == pytest.approx(0.693147, abs=1e-6)


def test_streams_differ_per_seed_and_rank_and_are_reproducible():
    task = RecallTask(context_length=16)

    def first(seed, rank, start=0):
        return next(iter(RecallStream(task, 8, seed, rank, 2, start)))["tokens"]

    assert torch.equal(first(0, 0), first(0, 0))
    assert not torch.equal(first(0, 0), first(0, 1))
    assert not torch.equal(first(0, 0), first(1, 0))
    stream = iter(RecallStream(task, 8, 0, 0))
    batches = [next(stream)["tokens"] for _ in range(3)]
    assert torch.equal(first(0, 0, start=2), next(iter(RecallStream(task, 8, 0, 0, 1, 2)))["tokens"])
    assert torch.equal(batches[2], next(iter(RecallStream(task, 8, 0, 0, 1, 2)))["tokens"])


def test_stream_is_the_same_for_any_number_of_workers():
    dm = RecallDataModule(context_length=16, batch_size=4, num_workers=2)
    it = iter(dm.train_dataloader())
    with_workers = [next(it)["tokens"] for _ in range(4)]
    stream = iter(RecallStream(dm.recall_task, 4, 0))
    assert all(torch.equal(a, next(stream)["tokens"]) for a in with_workers)


def test_finite_sample_cycles_over_its_fixed_prompts_and_gives_alpha_hat():
    dm = RecallDataModule(context_length=16, batch_size=8, n_samples=32, alpha=0.5)
    fixed = dm.fixed_sample["tokens"]
    it = iter(dm.train_dataloader())
    epoch = torch.cat([next(it)["tokens"] for _ in range(4)])
    # one epoch visits each of the 32 prompts once
    assert sorted(map(tuple, epoch.tolist())) == sorted(map(tuple, fixed.tolist()))
    alpha_hat = (dm.fixed_sample["target"] == 59).float().mean().item()
    assert dm.task["alpha_hat"] == pytest.approx(alpha_hat) and dm.task["alpha"] == 0.5


def test_validation_sets_are_fixed_by_val_seed():
    a = RecallDataModule(context_length=16, n_val=64, seed=0).eval_sets()
    b = RecallDataModule(context_length=16, n_val=64, seed=5).eval_sets()
    assert torch.equal(a[0]["tokens"], b[0]["tokens"]) and torch.equal(a[1]["tokens"], b[1]["tokens"])
    assert ((a[1]["output"] >= 9)).all() and ((a[0]["output"] < 9)).all()
    # the held-out test sets of `icrl test` are other draws of the same distributions
    test = RecallDataModule(context_length=16, n_val=64, seed=0).eval_sets("test")
    assert not torch.equal(test[0]["tokens"], a[0]["tokens"]) and not torch.equal(test[1]["tokens"], a[1]["tokens"])
    assert ((test[1]["output"] >= 9)).all() and ((test[0]["output"] < 9)).all()


def test_a_batch_beyond_half_the_memory_is_refused_with_the_example_size_of_a_drawn_batch(monkeypatch):
    dm = RecallDataModule(context_length=16, alpha=0.5, batch_size=4)
    batch = next(iter(dm.train_dataloader()))
    assert dm.example_bytes * 4 == sum(t.nbytes for t in batch.values())  # the estimate is the sampler's batch
    memory = 2 * 4 * dm.example_bytes - 1  # bytes, just under two batches: one batch is more than half
    monkeypatch.setattr("os.sysconf", lambda name: {"SC_PAGE_SIZE": 1, "SC_PHYS_PAGES": memory}[name])
    with pytest.raises(ValueError, match=r"^data\.batch_size=4: one training batch takes 0\.0 GiB \(48 bytes an example\), "
                                         r"more than half of this machine's 0\.0 GiB of memory; lower data\.batch_size$"):
        RecallDataModule(context_length=16, alpha=0.5, batch_size=4)
    RecallDataModule(context_length=16, alpha=0.5, batch_size=3)


def test_an_ensembles_device_draws_are_each_members_own_in_one_pass():
    tasks = [RecallTask(vocab_size=12, n_triggers=2, n_outputs=3, context_length=8, alpha=a) for a in (0.0, 0.5, 0.2)]
    stacked = sample_recall_stacked(tasks, 64, [generator(seed, DEVICE, 0, 3) for seed in range(3)], ood=True)
    for seed, (task, batch) in enumerate(zip(tasks, stacked)):
        alone = sample_recall_torch(task, 64, generator(seed, DEVICE, 0, 3), ood=True)
        assert batch.keys() == alone.keys() and all(torch.equal(batch[k], alone[k]) for k in alone)
        tokens = batch["tokens"]
        assert ((tokens == 11).sum(1) == (1 if task.noisy else 0)).all()  # τ only in the noisy (q, τ) bigram
        assert ((tokens[:, -1] == 0).all() if task.noisy else (tokens[:, -1] < 2).all())
    dms = [RecallDataModule(context_length=8, vocab_size=12, n_triggers=2, n_outputs=3, batch_size=4, alpha=a, seed=s,
                            device_sampling=True) for s, a in enumerate((0.0, 0.5))]
    together = RecallDataModule.stacked_after_batch_transfer(dms, [{"index": 7}, {"index": 7}], 0)
    for dm, batch in zip(dms, together):  # as each member's own on_after_batch_transfer
        assert all(torch.equal(batch[k], v) for k, v in dm.on_after_batch_transfer({"index": 7}, 0).items())


def test_device_sampling_draws_each_batch_where_it_trains_from_a_stream_of_its_own(run_cli):
    dm = RecallDataModule(context_length=16, batch_size=4, device_sampling=True)
    assert next(iter(dm.train_dataloader())) == {"index": 0}  # the stream carries indices only
    drawn = dm.on_after_batch_transfer({"index": 2}, 0)  # after Lightning moved it: drawn on the training device
    expected = sample_recall_torch(dm.recall_task, 4, generator(0, DEVICE, 0, 2))
    assert all(torch.equal(drawn[k], expected[k]) for k in expected) and drawn["tokens"].dtype == torch.int64
    assert not torch.equal(drawn["tokens"], dm.on_after_batch_transfer({"index": 3}, 0)["tokens"])
    dm.batches_consumed = 5  # a resumed run continues its stream
    assert next(iter(dm.train_dataloader())) == {"index": 5}
    assert dm.on_after_batch_transfer({"tokens": drawn["tokens"]}, 1)["tokens"] is drawn["tokens"]  # validation
    assert RecallDataModule().on_device is False  # default: on a GPU only
    with pytest.raises(ValueError, match="device_sampling draws fresh prompts: it needs n_samples=None"):
        RecallDataModule(n_samples=2048, device_sampling=True)
    cli = run_cli("fit", "--config", str(ROOT / "configs/recall/fig1/reparam-linear-fa.yaml"), "--data.context_length",
                  "16", "--data.batch_size", "8", "--data.n_val", "64", "--data.device_sampling", "true",
                  "--trainer.max_steps", "4", "--trainer.val_check_interval", "2")
    assert cli.trainer.global_step == 4 and cli.datamodule.on_device
    assert 0 < cli.trainer.callback_metrics["train/loss"] < 5
