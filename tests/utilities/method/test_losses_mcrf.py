"""Multi-view gated CRF loss: a hand-computed case, the unfold oracle (values and gradients) on
several configurations, the published code's golden values, autocast, errors and (with a GPU) CUDA."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from benchmarks.crf_reference import unfold_multiview_crf
from utilities.method.losses import CRF_VIEWS, MultiViewGatedCRFLoss, gated_crf_views

IMPLEMENTATIONS = ("shifts", "rows")


def assert_grad_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> None:
    """Gradients equal to ``rel`` of the largest entry (elementwise rtol is meaningless near 0)."""
    scale = expected.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * scale)


def views_and_grad(loss_fn, logits, image):
    """Per-view values and the gradient of their sum w.r.t. logits."""
    x = logits.clone().requires_grad_()
    views = loss_fn(x, image)
    views.sum().backward()
    return views.detach(), x.grad


def test_two_voxel_hand_case():
    # volume 2×1×1, equal intensities, p = (.5, .5): the only pair (along X) lies in the XY plane
    # (view Z) and in the XZ plane (view Y); K = exp(−½·1²/σ_xy²) = e^{−½} with σ_xy = 1,
    # 1 − Σ_c p p = .5; both ordered pairs, 2 voxels: 2·e^{−½}·.5 / 2. View X has no pair.
    logits = torch.zeros(1, 2, 2, 1, 1)
    image = torch.full((1, 1, 2, 1, 1), 0.3)
    loss_fn = MultiViewGatedCRFLoss(down_size=None, kernel_radius=1, sigma_xy=1.0, sigma_rgb=0.1)
    loss, views = loss_fn(logits, image, return_views=True)
    expected = 0.5 * math.exp(-0.5)
    torch.testing.assert_close(views, torch.tensor([expected, expected, 0.0]), rtol=1e-6, atol=0)
    assert loss.item() == pytest.approx(2 * expected / 3, rel=1e-6)
    assert CRF_VIEWS == ("Z", "Y", "X")


def test_intensity_gate_and_weight():
    # 2×2×1 volume, classes [[0, 0], [1, 1]] (index [x, y]) as one-hot softmax (logits ±60),
    # intensities [[0, 5], [5, .1]]; σ_xy = 2, σ_rgb = .1, weight 3.
    # K(d², ΔI) = 3·exp(−½(d²/4 + (ΔI/.1)²)); pairs of equal class give 1 − Σ p p = 0, others 1.
    classes = torch.tensor([[0, 0], [1, 1]])
    logits = (60.0 * (2 * F.one_hot(classes, 2) - 1)).permute(2, 0, 1).float().view(1, 2, 2, 2, 1)
    image = torch.tensor([[0.0, 5.0], [5.0, 0.1]]).view(1, 1, 2, 2, 1)
    views = MultiViewGatedCRFLoss(down_size=None, kernel_radius=1, sigma_xy=2.0, weight=3.0).views(logits, image)

    def k(d2: float, di: float) -> float:
        return 3.0 * math.exp(-0.5 * (d2 / 4.0 + (di / 0.1) ** 2))

    # view Z (XY plane), mixed pairs: (0,0)-(1,0) ΔI 5, (0,1)-(1,1) ΔI 4.9, diagonals (0,0)-(1,1)
    # ΔI .1 and (0,1)-(1,0) ΔI 0; each ordered both ways, over 4 voxels
    z = 2 * (k(1, 5.0) + k(1, 4.9) + k(2, 0.1) + k(2, 0.0)) / 4
    # view Y (XZ plane): the two pairs along X, both mixed
    y = 2 * (k(1, 5.0) + k(1, 4.9)) / 4
    # view X (YZ plane): the pairs along Y, (0,0)-(0,1) and (1,0)-(1,1), have equal classes: 0
    torch.testing.assert_close(views, torch.tensor([z, y, 0.0]), rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("n, c, shape, radius, down_size", [
    (1, 2, (8, 8, 8), 1, None),
    (2, 2, (12, 10, 7), 5, None),          # radius reaches past the smallest axis
    (2, 3, (9, 7, 6), 2, None),            # 3 classes, non-cubic
    (1, 4, (6, 5, 4), 5, None),            # radius larger than every axis
    (2, 3, (11, 9, 10), 5, (7, 8, 6)),     # with trilinear downsampling
])
def test_fast_matches_oracle(n, c, shape, radius, down_size):
    gen = torch.Generator().manual_seed(n * 100 + c * 10 + radius)
    logits = 2 * torch.randn(n, c, *shape, generator=gen)
    image = torch.rand(n, 1, *shape, generator=gen) * 0.5
    settings = dict(down_size=down_size, kernel_radius=radius, sigma_xy=3.0, sigma_rgb=0.2, weight=1.5)
    oracle, oracle_grad = views_and_grad(lambda x, i: unfold_multiview_crf(x, i, **settings), logits, image)
    for implementation in IMPLEMENTATIONS:
        loss_fn = MultiViewGatedCRFLoss(**settings, implementation=implementation)
        views, grad = views_and_grad(loss_fn.views, logits, image)
        torch.testing.assert_close(views, oracle, rtol=1e-5, atol=1e-7, msg=implementation)
        assert_grad_close(grad, oracle_grad)


def test_padded_oracle_matches_golden(golden):
    logits = golden["logits"].clone().requires_grad_()
    views = unfold_multiview_crf(logits, golden["image"], down_size=golden["mcrf_down_size"].tolist(),
                                 kernel_radius=5, sigma_xy=6.0, sigma_rgb=0.1, padded=True)
    torch.testing.assert_close(views.detach(), golden["mcrf_views"], rtol=1e-5, atol=0)
    views.mean().backward()
    assert_grad_close(logits.grad, golden["mcrf_grad"])


def padded_constant(image: torch.Tensor, radius: int, sigma_xy: float, sigma_rgb: float) -> torch.Tensor:
    """Per-view sum, over voxels i and their window positions outside the slice, of the published
    code's kernel between i's features and zero features, / voxels: (3,)."""
    n, _, *shape = image.shape
    img = image[:, 0].double()
    out = []
    for plane in ((0, 1), (0, 2), (1, 2)):                  # views Z, Y, X
        term = torch.exp(-0.5 * img ** 2 / sigma_rgb ** 2)
        count = torch.ones_like(img)
        window = 1.0
        for axis in plane:
            size = shape[axis]
            pos = torch.arange(size, dtype=torch.float64)
            inside = (torch.clamp(pos + radius, max=size - 1) - torch.clamp(pos - radius, min=0) + 1)
            view = [1, 1, 1]
            view[axis] = size
            term = term * torch.exp(-0.5 * pos ** 2 / sigma_xy ** 2).view(1, *view)
            count = count * inside.view(1, *view)
            window *= 2 * radius + 1
        out.append(((window - count) * term).sum() / img.numel())
    return torch.stack(out).float()


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_fast_matches_golden(golden, implementation):
    down = tuple(golden["mcrf_down_size"].tolist())
    logits = golden["logits"].clone().requires_grad_()
    loss_fn = MultiViewGatedCRFLoss(down_size=down, kernel_radius=5, sigma_xy=6.0, sigma_rgb=0.1,
                                    implementation=implementation)
    loss, views = loss_fn(logits, golden["image"], return_views=True)
    loss.backward()
    assert_grad_close(logits.grad, golden["mcrf_grad"])
    # our value excludes out-of-slice neighbours: add the published code's padded-neighbour constant
    image = F.interpolate(golden["image"], size=down, mode="trilinear", align_corners=True)
    constant = padded_constant(image, 5, 6.0, 0.1)
    torch.testing.assert_close(views.detach() + constant, golden["mcrf_views"], rtol=1e-5, atol=0)
    assert loss.item() == pytest.approx(4.1218, abs=1e-4)
    assert loss.item() + constant.mean().item() == pytest.approx(golden["mcrf"].item(), rel=1e-5)


def test_no_resize_when_already_down_size():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(1, 2, 6, 5, 4, generator=gen)
    image = torch.rand(1, 1, 6, 5, 4, generator=gen)
    a = MultiViewGatedCRFLoss(down_size=(6, 5, 4), kernel_radius=2)(logits, image)
    b = MultiViewGatedCRFLoss(down_size=None, kernel_radius=2)(logits, image)
    assert a.item() == b.item()


def test_crf_float32_under_autocast():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(1, 2, 8, 6, 5, generator=gen).bfloat16().requires_grad_()
    image = torch.rand(1, 1, 8, 6, 5, generator=gen).bfloat16()
    loss_fn = MultiViewGatedCRFLoss(down_size=(6, 6, 4), kernel_radius=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(logits, image)
    assert loss.dtype == torch.float32
    assert loss.item() == loss_fn(logits.detach().float(), image.float()).item()
    loss.backward()
    assert logits.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("logits_shape, image_shape, match", [
    ((1, 2, 4, 4, 4), (1, 2, 4, 4, 4), "image must be"),
    ((1, 2, 4, 4, 4), (2, 1, 4, 4, 4), "image must be"),
    ((1, 2, 4, 4, 4), (1, 1, 4, 4, 3), "image must be"),
    ((1, 1, 4, 4, 4), (1, 1, 4, 4, 4), "at least 2 channels"),
    ((2, 4, 4, 4), (2, 4, 4, 4), "logits must be"),
])
def test_crf_shape_errors(logits_shape, image_shape, match):
    with pytest.raises(ValueError, match=match):
        MultiViewGatedCRFLoss(down_size=None)(torch.zeros(logits_shape), torch.zeros(image_shape))


@pytest.mark.parametrize("kwargs, match", [
    ({"down_size": (64, 64)}, "down_size"),
    ({"down_size": (64, 0, 48)}, "down_size"),
    ({"kernel_radius": 0}, "kernel_radius"),
    ({"kernel_radius": 2.5}, "kernel_radius"),
    ({"sigma_xy": 0.0}, "sigma_xy"),
    ({"sigma_rgb": -1.0}, "sigma_rgb"),
    ({"weight": -0.1}, "weight"),
    ({"implementation": "unfold"}, "implementation"),
])
def test_crf_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiViewGatedCRFLoss(**kwargs)


def test_gated_crf_views_errors():
    with pytest.raises(ValueError, match="probs must be"):
        gated_crf_views(torch.zeros(1, 1, 3, 3, 3), torch.zeros(1, 1, 3, 3, 3))
    with pytest.raises(ValueError, match="kernel_radius"):
        gated_crf_views(torch.zeros(1, 2, 3, 3, 3), torch.zeros(1, 1, 3, 3, 3), kernel_radius=0)
    with pytest.raises(ValueError, match="implementation"):
        gated_crf_views(torch.zeros(1, 2, 3, 3, 3), torch.zeros(1, 1, 3, 3, 3), implementation="fast")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("implementation", ("auto",) + IMPLEMENTATIONS)
def test_crf_cuda_matches_cpu(implementation):
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 20, 18, 12, generator=gen)
    image = torch.rand(2, 1, 20, 18, 12, generator=gen)
    loss_fn = MultiViewGatedCRFLoss(down_size=(16, 16, 10), kernel_radius=5, implementation=implementation)
    x_cpu = logits.clone().requires_grad_()
    v_cpu = loss_fn.views(x_cpu, image)
    v_cpu.sum().backward()
    x_gpu = logits.to("cuda").requires_grad_()
    with torch.autocast("cuda", dtype=torch.float16):
        v_gpu = loss_fn.views(x_gpu, image.to("cuda"))
    assert v_gpu.dtype == torch.float32 and v_gpu.device.type == "cuda"
    v_gpu.sum().backward()
    torch.testing.assert_close(v_gpu.detach().cpu(), v_cpu.detach(), rtol=1e-5, atol=1e-7)
    assert_grad_close(x_gpu.grad.cpu(), x_cpu.grad)
