"""utilities/method/schedules.py: the sigmoid ramp-up and the poly learning rate at chosen epochs
(computed by hand), the warning for a ramp-up that does not end within the run, error paths, and
the published code's golden values."""
from __future__ import annotations

import math

import pytest
import torch

from utilities.method.schedules import poly_lr, rampup_warning, sigmoid_rampup


@pytest.mark.parametrize("epoch, length, expected", [
    (0, 30, math.exp(-5.0)),
    (15, 30, math.exp(-5.0 * 0.25)),
    (30, 30, 1.0),
    (45, 30, 1.0),       # clipped above
    (-3, 30, math.exp(-5.0)),  # clipped below
    (7, 0, 1.0),         # no ramp
])
def test_sigmoid_rampup_table(epoch, length, expected):
    assert sigmoid_rampup(epoch, length) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("epoch, max_epochs, lr0, expected", [
    (0, 300, 1e-2, 1e-2),
    (150, 300, 1e-2, 1e-2 * 0.5 ** 0.9),
    (299, 300, 1e-2, 1e-2 * (1 / 300) ** 0.9),
    (300, 300, 1e-2, 0.0),
])
def test_poly_lr_table(epoch, max_epochs, lr0, expected):
    assert poly_lr(epoch, max_epochs, lr0) == pytest.approx(expected, rel=1e-12, abs=0)


@pytest.mark.parametrize("call, match", [
    (lambda: sigmoid_rampup(3, -1), "length"),
    (lambda: poly_lr(301, 300, 1e-2), "epoch"),
    (lambda: poly_lr(-1, 300, 1e-2), "epoch"),
    (lambda: poly_lr(0, 0, 1e-2), "max_epochs"),
])
def test_schedule_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_schedules_golden(golden):
    ramp = torch.tensor([sigmoid_rampup(e, 30) for e in range(41)])
    torch.testing.assert_close(ramp, golden["sigmoid_rampup_e_0_to_40_L30"], rtol=1e-6, atol=0)
    lr = torch.tensor([poly_lr(e, 300, 1e-2) for e in range(301)])
    torch.testing.assert_close(lr, golden["poly_lr_e_0_to_300_E300"], rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("rampup, max_epochs, warmup, reached", [
    (30, 20, 0, "0.511"),   # exp(-5 (1 - 19/30)^2) = exp(-0.6722) at the last epoch, 19
    (30, 30, 0, "0.994"),   # exp(-5 (1/30)^2): one epoch short of the end of the ramp
    (10, 12, 5, "0.449"),   # after 5 warm-up epochs the last epoch is ramp epoch 6: exp(-5 * 0.4^2)
])
def test_rampup_warning_names_the_weight_reached(rampup, max_epochs, warmup, reached):
    assert rampup_warning(rampup, max_epochs, warmup) == (
        f"--rampup_epochs {rampup} (after --warmup_epochs {warmup}) does not end within --max_epochs {max_epochs}: "
        f"the CRF and VM weights reach only {reached} of their value by the last epoch; lower --rampup_epochs "
        f"to at most {max_epochs - warmup - 1}, or raise --max_epochs to at least {warmup + rampup + 1}")


@pytest.mark.parametrize("max_epochs, warmup", [(2, 2), (3, 5)])
def test_rampup_warning_for_a_run_that_ends_in_its_warm_up(max_epochs, warmup):
    """Every epoch is a warm-up epoch: the weights are 0 throughout (not the ramp's exp(-5))."""
    assert rampup_warning(5, max_epochs, warmup) == (
        f"--rampup_epochs 5 (after --warmup_epochs {warmup}) does not end within --max_epochs {max_epochs}: the CRF "
        f"and VM weights stay 0, every epoch is in the warm-up; raise --max_epochs to at least {warmup + 6}")


@pytest.mark.parametrize("rampup, max_epochs, warmup", [(30, 31, 0), (0, 5, 0), (10, 16, 5)])
def test_no_rampup_warning_when_the_ramp_ends_within_the_run(rampup, max_epochs, warmup):
    assert rampup_warning(rampup, max_epochs, warmup) is None
