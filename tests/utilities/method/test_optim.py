"""utilities/method/optim.py: the paper's SGD and the Adam alternative with their settings, the
learning-rate setter, and ``Amp`` on the CPU (disabled, float32) stepping with and without
gradient-norm clipping, by hand."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from utilities.method.optim import MOMENTUM, WEIGHT_DECAY, Amp, make_optimizer, set_lr


class _Weights(nn.Module):
    def __init__(self, n: int = 2) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(n))


def test_the_papers_sgd():
    optimizer = make_optimizer(_Weights(), 0.01)
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.01, 0.99, True, 3e-5)
    assert (MOMENTUM, WEIGHT_DECAY) == (0.99, 3e-5)
    plain = make_optimizer(_Weights(), 0.1, momentum=0.0).param_groups[0]
    assert (plain["momentum"], plain["nesterov"]) == (0.0, False)   # Nesterov needs a momentum


def test_adam_and_an_unknown_optimizer():
    optimizer = make_optimizer(_Weights(), 1e-3, momentum=0.5, kind="adam")
    assert isinstance(optimizer, torch.optim.Adam)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"]) == (1e-3, (0.9, 0.999), 3e-5)
    with pytest.raises(ValueError, match=r"--optimizer must be one of \('sgd', 'adam'\), got 'rmsprop'"):
        make_optimizer(_Weights(), 1e-3, kind="rmsprop")


def test_set_lr_sets_every_group():
    a, b = _Weights(), _Weights()
    optimizer = torch.optim.SGD([{"params": a.parameters()}, {"params": b.parameters(), "lr": 0.5}], lr=0.1)
    set_lr(optimizer, 0.02)
    assert [g["lr"] for g in optimizer.param_groups] == [0.02, 0.02]


def test_amp_is_off_on_the_cpu(caplog):
    with caplog.at_level(logging.WARNING, logger="paseg"):
        amp = Amp(True, torch.device("cpu"))
    assert not amp.enabled and amp.loss_scale == 1.0
    assert "--amp is only used on CUDA devices; running in float32 on cpu" in caplog.text
    value = torch.tensor(2.5)
    assert amp.scale(value) is value
    with amp.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


@pytest.mark.parametrize("clip_norm, expected", [(None, [-3.0, -4.0]), (1.0, [-0.6, -0.8]), (10.0, [-3.0, -4.0])])
def test_a_step_clips_the_gradient_norm(clip_norm, expected):
    """Gradient (3, 4), norm 5, from w = 0 with plain SGD at lr 1 (weight decay 0 at w = 0): w = -g,
    or -g / 5 once clipped to norm 1; a larger bound leaves it."""
    model = _Weights()
    optimizer = make_optimizer(model, 1.0, momentum=0.0)
    model.w.grad = torch.tensor([3.0, 4.0])
    Amp(False, torch.device("cpu")).step([optimizer], clip_norm=clip_norm)
    torch.testing.assert_close(model.w.detach(), torch.tensor(expected))
