"""Dice/CE, partial Dice+CE, Variance Minimisation and KD losses: hand-computed 2-voxel cases,
error paths, autocast, and the published code's golden values."""
from __future__ import annotations

import math

import pytest
import torch

from utilities.method.losses import DICE_EPS, DiceCELoss, KDLoss, PartialDiceCELoss, VarianceLoss, one_hot, soft_dice

LN3 = math.log(3.0)
EPS = DICE_EPS


def vol(values) -> torch.Tensor:
    """(C, V) nested list -> (1, C, V, 1, 1) float tensor (one item, V voxels along X)."""
    t = torch.tensor(values, dtype=torch.float32)
    return t[None, :, :, None, None]


def lab(values) -> torch.Tensor:
    """V labels -> (1, 1, V, 1, 1) int64."""
    return torch.tensor(values, dtype=torch.int64)[None, None, :, None, None]


# --------------------------------------------------------------------------------------- soft Dice
@pytest.mark.parametrize("probs, labels, mask, expected", [
    # perfect prediction: 2·1 / (1 + 1 + eps) per class
    ([[1, 0], [0, 1]], [0, 1], None, [2 / (2 + EPS), 2 / (2 + EPS)]),
    # uniform 0.5: intersection 0.5, sums 1 + 1
    ([[.5, .5], [.5, .5]], [0, 1], None, [1 / (2 + EPS), 1 / (2 + EPS)]),
    # all wrong
    ([[0, 1], [1, 0]], [0, 1], None, [0.0, 0.0]),
    # class 1 absent from prediction and label: 0 (eps only in the denominator)
    ([[1, 1], [0, 0]], [0, 0], None, [4 / (4 + EPS), 0.0]),
    # second voxel masked out: only voxel 0 (p = (.75, .25), label 0) counts
    ([[.75, .1], [.25, .9]], [0, 1], [1, 0], [1.5 / (1.75 + EPS), 0 / (.25 + EPS)]),
])
def test_soft_dice_table(probs, labels, mask, expected):
    p = vol(probs)
    g = one_hot(lab(labels)[:, 0], 2)
    m = None if mask is None else torch.tensor(mask, dtype=torch.float32)[None, :, None, None]
    d = soft_dice(p, g, m)
    assert d.shape == (1, 2)
    torch.testing.assert_close(d[0], torch.tensor(expected), rtol=0, atol=1e-7)


def test_soft_dice_shape_errors():
    with pytest.raises(ValueError, match="onehot shape"):
        soft_dice(torch.zeros(1, 2, 4, 1, 1), torch.zeros(1, 3, 4, 1, 1))
    with pytest.raises(ValueError, match="mask shape"):
        soft_dice(torch.zeros(1, 2, 4, 1, 1), torch.zeros(1, 2, 4, 1, 1), torch.zeros(1, 1, 3, 1, 1))


# ------------------------------------------------------------------------------------------ DiceCE
# logits (ln 3, 0) -> p = (.75, .25); (0, 0) -> (.5, .5)
@pytest.mark.parametrize("logits, labels, expected", [
    ([[0, 0], [0, 0]], [0, 1], 1 - 1 / (2 + EPS) + math.log(2)),
    ([[LN3, 0], [0, LN3]], [0, 1], 1 - 1.5 / (2 + EPS) + math.log(4 / 3)),
    ([[LN3, 0], [0, LN3]], [1, 0], 1 - 0.5 / (2 + EPS) + math.log(4)),
    # both voxels label 0: Dice class 0 = 2(.75+.5)/(1.25+2), class 1 = 0
    ([[LN3, 0], [0, 0]], [0, 0], 1 - (2.5 / (3.25 + EPS)) / 2 + (math.log(4 / 3) + math.log(2)) / 2),
])
def test_dice_ce_table(logits, labels, expected):
    loss = DiceCELoss()(vol(logits), lab(labels))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, abs=2e-7)


def test_dice_ce_accepts_labels_without_channel_and_weights():
    logits, labels = vol([[LN3, 0], [0, LN3]]), lab([0, 1])
    full = DiceCELoss()(logits, labels[:, 0])
    assert full.item() == pytest.approx(1 - 1.5 / (2 + EPS) + math.log(4 / 3), abs=2e-7)
    assert DiceCELoss(ce_weight=0.0)(logits, labels).item() == pytest.approx(1 - 1.5 / (2 + EPS), abs=2e-7)
    assert DiceCELoss(dice_weight=0.0)(logits, labels).item() == pytest.approx(math.log(4 / 3), abs=2e-7)


@pytest.mark.parametrize("logits_shape, labels, match", [
    ((1, 2, 4, 4, 4), torch.zeros(1, 4, 4, 3, dtype=torch.long), "does not match"),
    ((1, 2, 4, 4, 4), torch.zeros(2, 1, 4, 4, 4, dtype=torch.long), "does not match"),
    ((1, 2, 4, 4, 4), torch.zeros(1, 2, 4, 4, 4, dtype=torch.long), "must be"),
    ((1, 2, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4), "integer"),
    ((1, 2, 4, 4, 4), torch.full((1, 1, 4, 4, 4), 2), r"\[0, 2\)"),
    ((1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), "logits must be"),
    ((1, 1, 4, 4, 4), torch.zeros(1, 4, 4, 4, dtype=torch.long), "at least 2 channels"),
])
def test_dice_ce_errors(logits_shape, labels, match):
    with pytest.raises(ValueError, match=match):
        DiceCELoss()(torch.zeros(logits_shape), labels)


def test_dice_ce_golden(golden):
    loss = DiceCELoss()(golden["logits"], golden["teacher"].argmax(1))
    assert loss.item() == pytest.approx(golden["dice_ce_full"].item(), rel=1e-6)


# ----------------------------------------------------------------------------------- partial DiceCE
def test_partial_ignores_unknown_voxels():
    # voxel 1 (label 2 = unknown) has any logits: the loss is the one of voxels 0 and 2
    logits = vol([[LN3, 7.0, 0], [0, -3.0, LN3]])
    loss = PartialDiceCELoss()(logits, lab([0, 2, 1]))
    assert loss.item() == pytest.approx(1 - 1.5 / (2 + EPS) + math.log(4 / 3), abs=2e-7)


@pytest.mark.parametrize("labels, expected", [
    # item 0: voxels (0, 1) annotated; item 1: nothing annotated -> mean over item 0 only
    ([[0, 1, 2], [2, 2, 2]], 1 - 1.5 / (2 + EPS) + math.log(4 / 3)),
    # item 1: only voxel 0 (p = .75, label 0): Dice class 0 = 1.5/(1.75), class 1 = 0/(.25)
    ([[0, 1, 2], [0, 2, 2]], ((1 - 1.5 / (2 + EPS) + math.log(4 / 3))
                              + (1 - (1.5 / (1.75 + EPS)) / 2 + math.log(4 / 3))) / 2),
])
def test_partial_item_averaging(labels, expected):
    logits = torch.cat([vol([[LN3, 0, 5.0], [0, LN3, 0]])] * 2)
    labels = torch.tensor(labels)[:, None, :, None, None]
    assert PartialDiceCELoss()(logits, labels).item() == pytest.approx(expected, abs=3e-7)


def test_partial_foreground_batch_dice_by_hand():
    """``dice="foreground"`` (nnU-Net's): one Dice of the foreground class over both items' annotated
    voxels (item 0: voxel 0 background, voxel 1 foreground; item 1: voxel 0 background), plus the
    mean of the items' CE. Foreground probabilities 1/4, 3/4 and 1/4: Σp = 5/4, Σg = 1, Σpg = 3/4."""
    logits = torch.cat([vol([[LN3, 0, 5.0], [0, LN3, 0]])] * 2)
    labels = torch.tensor([[0, 1, 2], [0, 2, 2]])[:, None, :, None, None]
    expected = 1 - 1.5 / (2.25 + EPS) + math.log(4 / 3)
    assert PartialDiceCELoss(dice="foreground")(logits, labels).item() == pytest.approx(expected, abs=3e-7)
    # the paper's per-item mean over both classes differs on the same batch
    assert PartialDiceCELoss()(logits, labels).item() != pytest.approx(expected, abs=1e-3)
    # the unknown voxels get no gradient; nothing annotated is 0 with a zero gradient, as the paper's
    z = logits.clone().requires_grad_(True)
    PartialDiceCELoss(dice="foreground")(z, labels).backward()
    assert float(z.grad[0, :, 2].abs().max()) == 0.0 and float(z.grad[1, :, 1:].abs().max()) == 0.0
    none = torch.full_like(labels, 2)
    z = logits.clone().requires_grad_(True)
    loss = PartialDiceCELoss(dice="foreground")(z, none)
    loss.backward()
    assert loss.item() == 0.0 and float(z.grad.abs().max()) == 0.0
    with pytest.raises(ValueError, match="dice must be one of"):
        PartialDiceCELoss(dice="batch")


def test_partial_class_balanced_ce():
    """``class_balanced``: each annotated class's mean CE, averaged over the classes present;
    the Dice part and the unknown voxels (label 2) are untouched."""
    logits = vol([[LN3, LN3, 0, 0, 9.0], [0, 0, 0, LN3, 0]])
    labels = lab([0, 0, 0, 1, 2])
    ce = {"plain": (3 * math.log(4 / 3) + math.log(2)) / 4,
          "balanced": ((2 * math.log(4 / 3) + math.log(2)) / 3 + math.log(4 / 3)) / 2}
    plain = PartialDiceCELoss()(logits, labels).item()
    balanced = PartialDiceCELoss(class_balanced=True)(logits, labels).item()
    assert balanced - plain == pytest.approx(ce["balanced"] - ce["plain"], abs=1e-6)
    # the single foreground voxel weighs 1/2 of the CE instead of 1/4: on its foreground logit the CE
    # gradient (p − 1)·w, p = 3/4, changes by −1/4 · (1/2 − 1/4); the Dice gradient is the same in both
    grads = {}
    for name, balanced_flag in (("plain", False), ("balanced", True)):
        z = logits.clone().requires_grad_(True)
        PartialDiceCELoss(class_balanced=balanced_flag)(z, labels).backward()
        grads[name] = z.grad[0, :, :, 0, 0]
    assert float(grads["balanced"][1, 3] - grads["plain"][1, 3]) == pytest.approx(-1 / 16, abs=1e-6)
    assert float(grads["balanced"][:, 4].abs().max()) == 0.0  # unknown voxel: no gradient
    # one class present: both are the plain mean
    only_bg = lab([0, 0, 0, 2, 2])
    assert PartialDiceCELoss(class_balanced=True)(logits, only_bg).item() == pytest.approx(
        PartialDiceCELoss()(logits, only_bg).item(), abs=1e-7)


def test_partial_balance_power_tempers_the_balance():
    """``balance_power`` β: voxel weights n_c ** -β; β = 1 is the class-balanced mean, β -> 0 the
    plain mean, and β = 1/2 by hand (3 background seeds, 1 foreground)."""
    logits = vol([[LN3, LN3, 0, 0, 9.0], [0, 0, 0, LN3, 0]])
    labels = lab([0, 0, 0, 1, 2])
    s_bg, s_fg = 2 * math.log(4 / 3) + math.log(2), math.log(4 / 3)
    w_bg = 3 ** -0.5
    half = (w_bg * s_bg + s_fg) / (w_bg * 3 + 1)
    plain = PartialDiceCELoss()(logits, labels).item()
    ce_plain = (s_bg + s_fg) / 4
    got = PartialDiceCELoss(class_balanced=True, balance_power=0.5)(logits, labels).item()
    assert got - plain == pytest.approx(half - ce_plain, abs=1e-6)
    assert PartialDiceCELoss(class_balanced=True, balance_power=1e-9)(logits, labels).item() == pytest.approx(
        plain, abs=1e-6)
    near_one = PartialDiceCELoss(class_balanced=True, balance_power=1 - 1e-9)(logits, labels).item()
    assert near_one == pytest.approx(PartialDiceCELoss(class_balanced=True)(logits, labels).item(), abs=1e-6)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="balance_power"):
            PartialDiceCELoss(class_balanced=True, balance_power=bad)


def test_partial_nothing_annotated_is_zero_with_zero_grad():
    logits = torch.randn(2, 2, 3, 2, 2, requires_grad=True)
    loss = PartialDiceCELoss()(logits, torch.full((2, 1, 3, 2, 2), 2))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("num_classes, logits_shape, labels, match", [
    (2, (1, 3, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4, dtype=torch.long), "num_classes=2"),
    (2, (1, 2, 4, 4, 4), torch.zeros(1, 1, 4, 4, 5, dtype=torch.long), "does not match"),
    (2, (1, 2, 4, 4, 4), torch.full((1, 1, 4, 4, 4), -1), ">= 0"),
])
def test_partial_errors(num_classes, logits_shape, labels, match):
    with pytest.raises(ValueError, match=match):
        PartialDiceCELoss(num_classes)(torch.zeros(logits_shape), labels)
    with pytest.raises(ValueError, match="num_classes"):
        PartialDiceCELoss(1)


def test_partial_golden(golden):
    loss = PartialDiceCELoss(num_classes=2)(golden["logits"], golden["seeds"])
    assert loss.item() == pytest.approx(golden["partial_dice_ce"].item(), rel=1e-6)


# --------------------------------------------------------------------------- Variance Minimisation
BIG = 60.0  # softmax of (±60) is exactly one-hot in float32


@pytest.mark.parametrize("image, logits, exclude_padding, expected", [
    # p0 = 1 on I = 1, 2; p1 = 1 on I = 3, 4. Background without the minimum voxel (I = 1):
    # {2}: var 0; foreground {3, 4}: var .25
    ([1, 2, 3, 4], [[BIG, BIG, -BIG, -BIG], [0, 0, 0, 0]], True, 0.25),
    # same, padding kept: background {1, 2}: var .25
    ([1, 2, 3, 4], [[BIG, BIG, -BIG, -BIG], [0, 0, 0, 0]], False, 0.5),
    # uniform p = .5: background {2, 3, 4} var 2/3, foreground {1, 2, 3, 4} var 1.25
    ([1, 2, 3, 4], [[0, 0, 0, 0], [0, 0, 0, 0]], True, 2 / 3 + 1.25),
    # constant image: nothing above the minimum for the background, foreground var 0
    ([5, 5, 5, 5], [[0, 0, 0, 0], [0, 0, 0, 0]], True, 0.0),
])
def test_variance_table(image, logits, exclude_padding, expected):
    loss = VarianceLoss(exclude_padding=exclude_padding)(vol(logits), vol([image]))
    assert loss.item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_variance_batch_mean():
    logits = torch.cat([vol([[BIG, BIG, -BIG, -BIG], [0, 0, 0, 0]]), vol([[0, 0, 0, 0], [0, 0, 0, 0]])])
    image = torch.cat([vol([[1, 2, 3, 4]])] * 2)
    assert VarianceLoss()(logits, image).item() == pytest.approx((0.25 + 2 / 3 + 1.25) / 2, rel=1e-4)


@pytest.mark.parametrize("image_shape", [(1, 2, 4, 1, 1), (2, 1, 4, 1, 1), (1, 1, 3, 1, 1), (1, 4, 1, 1)])
def test_variance_errors(image_shape):
    with pytest.raises(ValueError, match="image must be"):
        VarianceLoss()(torch.zeros(1, 2, 4, 1, 1), torch.zeros(image_shape))


def test_variance_golden(golden):
    logits = golden["logits"].clone().requires_grad_()
    loss = VarianceLoss()(logits, golden["image"])
    assert loss.item() == pytest.approx(golden["vm"].item(), rel=1e-6)
    loss.backward()
    torch.testing.assert_close(logits.grad, golden["vm_grad"], rtol=1e-5,
                               atol=1e-5 * golden["vm_grad"].abs().max().item())


# -------------------------------------------------------------------------------------------- KD
S3 = math.sqrt(3.0)


@pytest.mark.parametrize("T, student, teacher, expected", [
    (1.0, [[LN3], [0]], [[0], [0]], 0.5 * math.log(4 / 3)),          # KL((.5,.5) ‖ (.75,.25))
    (2.0, [[LN3], [0]], [[0], [0]], 4 * 0.5 * (math.log((1 + S3) / (2 * S3)) + math.log((1 + S3) / 2))),
    (4.0, [[1.0, -2.0], [3.0, 0.5]], [[1.0, -2.0], [3.0, 0.5]], 0.0),  # identical: 0
    # two voxels: the mean of the two voxels' KL (the second one is 0)
    (1.0, [[LN3, 0], [0, 0]], [[0, 0], [0, 0]], 0.25 * math.log(4 / 3)),
])
def test_kd_table(T, student, teacher, expected):
    assert KDLoss(T)(vol(student), vol(teacher)).item() == pytest.approx(expected, abs=1e-7)


def test_kd_teacher_gets_no_gradient_and_errors():
    s = torch.randn(1, 2, 3, 2, 2, requires_grad=True)
    t = torch.randn(1, 2, 3, 2, 2, requires_grad=True)
    KDLoss(2.0)(s, t).backward()
    assert t.grad is None and s.grad is not None
    with pytest.raises(ValueError, match="teacher shape"):
        KDLoss()(s, torch.zeros(1, 2, 3, 2, 1))
    with pytest.raises(ValueError, match="T must be positive"):
        KDLoss(0.0)


def test_kd_golden(golden):
    loss = KDLoss(T=4.0)(golden["logits"], golden["teacher"])
    assert loss.item() == pytest.approx(golden["kd_T4"].item(), rel=1e-6)


# ---------------------------------------------------------------------------------------- autocast
@pytest.mark.parametrize("loss_fn, second", [
    (DiceCELoss(), "labels"), (PartialDiceCELoss(), "seeds"), (VarianceLoss(), "image"), (KDLoss(), "teacher"),
])
def test_losses_compute_in_float32_under_autocast(golden, loss_fn, second):
    logits = golden["logits"].bfloat16()
    other = {"labels": golden["teacher"].argmax(1), "seeds": golden["seeds"],
             "image": golden["image"].bfloat16(), "teacher": golden["teacher"].bfloat16()}[second]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(logits, other)
    reference = loss_fn(logits.float(), other.float() if other.is_floating_point() else other)
    assert loss.dtype == torch.float32
    assert loss.item() == reference.item()
