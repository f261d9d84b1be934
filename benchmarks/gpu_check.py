"""Device check of the training steps and the mCRF loss, with and without mixed precision.

Needs torch (and numpy through torch) only: it imports ``networks`` and ``utilities.losses``, and
reproduces the stage-1 ``training_step`` and the SCM ``scm_step`` inline (the training scripts
import MONAI/TorchIO through ``utilities.training``, which the GPU machine may not have). The
mixed-precision path is that of ``utilities.training.Amp``: bf16 autocast where supported, else
fp16 with a GradScaler; the losses compute in float32 themselves.

Sections (median of ``--repeats`` after ``--warmup``, peak = ``torch.cuda.max_memory_allocated``
on CUDA, the growth of the resident set on CPU):
  1. stage-1 step (U_Net2D5, fast mCRF at ``--down_size`` + VM + partial DiceCE, SGD):
     fp32, amp, amp + channels_last_3d, amp + cudnn.benchmark;
  2. SCM step (U_Net2D5 + AttU_Net students, frozen teachers, DiceCE + KD): fp32 and amp;
  3. mCRF fwd+bwd at the patch size and at ``--down_size`` (no resizing): fast (rows, shifts)
     vs the unfold baseline of ``tests/crf_oracle.py`` (skipped with a note when out of memory).

    python benchmarks/gpu_check.py --device cuda
    python benchmarks/gpu_check.py --device cpu --size 32 32 16 --down_size 16 16 16 --repeats 1 --warmup 0
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import copy
import gc
import resource
import statistics
import time
import traceback
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from networks import get_network
from tests.crf_oracle import unfold_multiview_crf
from utilities.losses import (DiceCELoss, KDLoss, MultiViewGatedCRFLoss, PartialDiceCELoss,
                              VarianceLoss)

__all__ = ["MiniAmp", "synthetic_batch", "time_fn", "stage1_rows", "scm_rows", "crf_rows", "format_rows", "main"]

MOMENTUM = 0.99          # utilities.training.MOMENTUM
WEIGHT_DECAY = 3e-5      # utilities.training.WEIGHT_DECAY


class MiniAmp:
    """The behaviour of ``utilities.training.Amp`` without its MONAI import."""

    def __init__(self, enabled: bool, device: torch.device) -> None:
        self.enabled = enabled and device.type == "cuda"
        self.device_type = device.type
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.dtype = torch.bfloat16 if bf16 else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and self.dtype == torch.float16)

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


def _label(name: str, amp: MiniAmp, requested: bool) -> str:
    if not requested:
        return name
    return f"{name} ({str(amp.dtype).replace('torch.', '')})" if amp.enabled else f"{name} (off: not CUDA)"


def _sgd(model: nn.Module) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=1e-2, momentum=MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY)


def synthetic_batch(size: Sequence[int], device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """A z-scored smooth image (1, 1, X, Y, Z) and expanded seeds (1, 1, X, Y, Z) in {0, 1, 2}."""
    gen = torch.Generator().manual_seed(seed)
    image = F.avg_pool3d(torch.randn(1, 1, *size, generator=gen), 5, stride=1, padding=2)
    image = (image - image.mean()) / image.std()
    seeds = torch.full((1, 1, *size), 2, dtype=torch.int64)
    x, y, z = size
    seeds[..., : x // 8, :, :] = 0
    seeds[..., x // 2 - x // 8: x // 2 + x // 8, y // 2 - y // 8: y // 2 + y // 8, z // 2 - z // 4: z // 2 + z // 4] = 1
    return {"image": image.to(device), "seeds": seeds.to(device)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return int(fields["VmRSS"].split()[0])


def time_fn(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds of ``fn()`` and peak memory (MiB) above what was allocated before."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _rss_kib() * 1024
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    else:  # ru_maxrss is the process peak: an upper bound of this function's peak
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"median_s": statistics.median(times), "min_s": min(times), "peak_mib": peak / 2**20}


def stage1_rows(size: Sequence[int], down_size: Sequence[int], radius: int, device: torch.device,
                repeats: int, warmup: int) -> list[dict[str, Any]]:
    """The stage-1 step (ramp 1: weights 1 and 0.1) in several precision/layout settings."""
    batch = synthetic_batch(size, device)
    seg_loss = PartialDiceCELoss(num_classes=2)
    crf_loss = MultiViewGatedCRFLoss(down_size=tuple(down_size), kernel_radius=radius)
    var_loss = VarianceLoss()
    variants = [("fp32", False, False, False), ("amp", True, False, False),
                ("amp + channels_last_3d", True, True, False), ("amp + cudnn.benchmark", True, False, True)]
    if device.type != "cuda":
        variants = variants[:1] + [("fp32 + channels_last_3d", False, True, False)]
    rows = []
    for name, use_amp, channels_last, bench in variants:
        torch.manual_seed(0)
        model = get_network("U_Net2D5", 1, 2).to(device)
        image = batch["image"]
        if channels_last:
            model = model.to(memory_format=torch.channels_last_3d)
            image = image.contiguous(memory_format=torch.channels_last_3d)
        optimizer = _sgd(model)
        amp = MiniAmp(use_amp, device)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = bench

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with amp.autocast():
                logits = model(image)
            loss = seg_loss(logits, batch["seeds"]) + 1.0 * crf_loss(logits, image) + 0.1 * var_loss(logits, image)
            loss.item()  # the script reads every term (.item()) before backward
            amp.step(loss, optimizer)

        r = time_fn(step, device, repeats, warmup)
        rows.append({"section": "stage-1 step", "variant": _label(name, amp, use_amp), **r})
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
    base = rows[0]["median_s"]
    for r in rows:
        r["speedup"] = base / r["median_s"]
    return rows


def scm_rows(size: Sequence[int], device: torch.device, repeats: int, warmup: int) -> list[dict[str, Any]]:
    """The SCM step of two students (U_Net2D5, AttU_Net) with frozen copies as teachers."""
    image = synthetic_batch(size, device)["image"]
    dice_ce, kd, weight_kd = DiceCELoss(), KDLoss(T=4.0), 0.5
    rows = []
    for name, use_amp in (("fp32", False), ("amp", True)):
        torch.manual_seed(0)
        students = {1: get_network("U_Net2D5", 1, 2).to(device), 2: get_network("AttU_Net", 1, 2).to(device)}
        teachers = {k: copy.deepcopy(m).eval().requires_grad_(False) for k, m in students.items()}
        optimizers = {k: _sgd(m) for k, m in students.items()}
        amp = MiniAmp(use_amp, device)

        def step() -> None:
            with torch.inference_mode(), amp.autocast():
                t_logits = {k: teachers[k](image).float() for k in (1, 2)}
            t_logits = {k: v.clone() for k, v in t_logits.items()}
            losses = {}
            for k, other in ((1, 2), (2, 1)):
                optimizers[k].zero_grad(set_to_none=True)
                with amp.autocast():
                    logits = students[k](image)
                pseudo = t_logits[k].argmax(1, keepdim=True)
                losses[k] = (1 - weight_kd) * dice_ce(logits, pseudo) + weight_kd * kd(logits, t_logits[other])
                losses[k].item()
            for k in (1, 2):
                amp.scaler.scale(losses[k]).backward()
                amp.scaler.step(optimizers[k])
            amp.scaler.update()

        r = time_fn(step, device, repeats, warmup)
        rows.append({"section": "SCM step", "variant": _label(name, amp, use_amp), **r})
    for r in rows:
        r["speedup"] = rows[0]["median_s"] / r["median_s"]
    return rows


def crf_rows(sizes: Sequence[Sequence[int]], radius: int, device: torch.device, repeats: int,
             warmup: int) -> list[dict[str, Any]]:
    """mCRF forward+backward at each size (inputs given at that size): unfold vs fast."""
    rows = []
    for size in sizes:
        gen = torch.Generator().manual_seed(0)
        logits = (2.0 * torch.randn(1, 2, *size, generator=gen)).to(device)
        image = synthetic_batch(size, device)["image"]
        fns = {"unfold (baseline)": lambda x: unfold_multiview_crf(x, image, down_size=None, kernel_radius=radius).mean()}
        for impl in ("rows", "shifts"):
            module = MultiViewGatedCRFLoss(down_size=None, kernel_radius=radius, implementation=impl)
            fns[f"fast-{impl}"] = lambda x, m=module: m(x, image)
        base = None
        for name, fn in fns.items():
            def step(fn=fn) -> None:
                x = logits.clone().requires_grad_()
                fn(x).backward()
            label = "x".join(map(str, size))
            try:
                r = time_fn(step, device, repeats, warmup)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                rows.append({"section": f"mCRF {label}", "variant": name, "note": "out of memory"})
                continue
            if name.startswith("unfold"):
                base = r["median_s"]
            r["speedup"] = base / r["median_s"] if base else None
            rows.append({"section": f"mCRF {label}", "variant": name, **r})
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """Plain-text table."""
    head = f"{'section':<16} {'variant':<34} {'median s':>10} {'min s':>10} {'peak MiB':>10} {'speed-up':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if "median_s" not in r:
            lines.append(f"{r['section']:<16} {r['variant']:<34} {r.get('note', '')}")
            continue
        speed = f"{r['speedup']:.2f}x" if r.get("speedup") else "n/a"
        lines.append(f"{r['section']:<16} {r['variant']:<34} {r['median_s']:>10.4f} {r['min_s']:>10.4f} "
                     f"{r['peak_mib']:>10.1f} {speed:>9}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--size", type=int, nargs=3, default=[128, 128, 48], help="patch X Y Z")
    p.add_argument("--down_size", type=int, nargs=3, default=[64, 64, 48], help="mCRF size in the step")
    p.add_argument("--radius", type=int, default=5)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--sections", nargs="+", default=["stage1", "scm", "crf"], choices=["stage1", "scm", "crf"])
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        raise ValueError(f"--repeats must be >= 1 and --warmup >= 0, got {args.repeats}, {args.warmup}")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda given but torch.cuda.is_available() is False")
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; size {args.size}, down_size {args.down_size}, "
          f"radius {args.radius}; median of {args.repeats} after {args.warmup} warm-up", flush=True)
    rows: list[dict[str, Any]] = []
    jobs = {"stage1": lambda: stage1_rows(args.size, args.down_size, args.radius, device, args.repeats, args.warmup),
            "scm": lambda: scm_rows(args.size, device, args.repeats, args.warmup),
            "crf": lambda: crf_rows([tuple(args.size), tuple(args.down_size)], args.radius, device, args.repeats,
                                    args.warmup)}
    for section in args.sections:
        try:  # a failing section is reported and the others still run (one device run, one chance)
            new_rows = jobs[section]()
        except Exception:
            print(f"section {section} FAILED:\n{traceback.format_exc()}", flush=True)
            new_rows = [{"section": section, "variant": "-", "note": "FAILED (traceback above)"}]
        rows += new_rows
        print(format_rows(new_rows), flush=True)
    table = f"device: {name}\n" + format_rows(rows)
    print("\n" + table)
    return table


if __name__ == "__main__":
    main()
