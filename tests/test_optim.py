"""NormalizedGD (docs/science.md §R.5): exact steps, zero-norm tensors, global norm, closure."""

import pytest
import torch

from icrl.optim import NormalizedGD


def test_per_tensor_step_moves_each_tensor_by_lr():
    a = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    b = torch.nn.Parameter(torch.tensor([[0.0, 0.0], [0.0, 0.0]]))
    opt = NormalizedGD([a, b], lr=0.5)
    a.grad = torch.tensor([3.0, 4.0])  # norm 5
    b.grad = torch.tensor([[0.0, 2.0], [0.0, 0.0]])  # norm 2
    opt.step()
    torch.testing.assert_close(a.data, torch.tensor([1.0 - 0.3, 2.0 - 0.4]))
    torch.testing.assert_close(b.data, torch.tensor([[0.0, -0.5], [0.0, 0.0]]))


def test_global_norm_step_uses_one_norm_over_all_tensors():
    a = torch.nn.Parameter(torch.tensor([0.0, 0.0]))
    b = torch.nn.Parameter(torch.tensor([0.0]))
    opt = NormalizedGD([a, b], lr=1.0, global_norm=True)
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])  # global norm 5
    opt.step()
    torch.testing.assert_close(a.data, torch.tensor([-0.6, 0.0]))
    torch.testing.assert_close(b.data, torch.tensor([-0.8]))


def test_zero_norm_tensor_is_left_unchanged_and_finite():
    a = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    b = torch.nn.Parameter(torch.tensor([2.0]))
    opt = NormalizedGD([a, b], lr=0.1)
    a.grad, b.grad = torch.zeros(2), torch.tensor([-1.0])
    opt.step()
    torch.testing.assert_close(a.data, torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(b.data, torch.tensor([2.1]))


def test_closure_is_called_and_its_loss_returned():
    w = torch.nn.Parameter(torch.tensor([2.0]))
    opt = NormalizedGD([w], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 4.0
    torch.testing.assert_close(w.data, torch.tensor([1.75]))


def test_param_groups_keep_their_own_lr():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = NormalizedGD([{"params": [a]}, {"params": [b], "lr": 0.01}], lr=1.0)
    a.grad, b.grad = torch.ones(1), torch.ones(1)
    opt.step()
    assert a.item() == pytest.approx(-1.0) and b.item() == pytest.approx(-0.01)


@pytest.mark.parametrize("lr", [0.0, -0.1])
def test_non_positive_lr_is_refused(lr):
    with pytest.raises(ValueError, match="lr must be > 0"):
        NormalizedGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
