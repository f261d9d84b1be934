"""Benchmark whole-volume sliding-window inference against a bare forward pass of the network (CPU).

Case 1 (``--size``, default the patch size 128×128×48): ``utilities.models.prediction.sliding_window_predict``
(one window, gaussian blending, overlap ``--overlap``) against ``model(x)`` under
``torch.inference_mode``: the overhead of the sliding-window machinery. Case 2 (``--large``,
default 256×256×64, several windows): ``--sw_batch_size`` 1 against 4 and against N bare
forwards of one window (N = the number of windows), for information. Optional variants of
case 1: the model and input in ``channels_last_3d`` and a bf16 CPU autocast forward (with the
largest logit difference and the share of voxels whose argmax changes; only on a CPU with native
bf16, where it is not emulated). All variants of a case run round-robin; medians and minima over
the timed rounds; peak memory = growth of the peak resident set (VmHWM reset) over the resident
set before the call.

Example::

    python benchmarks/bench_inference.py --repeats 5 --warmup 1 --threads 2
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

from benchmarks._common import cpu_native_bf16, machine, round_robin, synthetic_batch
from benchmarks._common import format_table as common_table
from networks import get_network
from utilities.core.arguments import ArgumentParser
from utilities.core.compile import COMPILE_BACKENDS, maybe_compile
from utilities.models.prediction import sliding_window_predict
from utilities.workflow.cli import positive_int

__all__ = ["window_count", "time_round_robin", "bench_case", "format_table", "main"]


def window_count(size: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Number of sliding windows MONAI uses for ``size`` (each axis padded up to ``roi``)."""
    n = 1
    for s, r in zip(size, roi):
        s = max(s, r)
        interval = max(int(r * (1 - overlap)), 1)
        n *= math.ceil((s - r) / interval) + 1 if s > r else 1
    return n


def time_round_robin(fns: dict[str, Callable[[], torch.Tensor]], repeats: int, warmup: int,
                     log: Callable[[str], None] = print) -> dict[str, dict[str, float]]:
    """Median/min seconds, the timed rounds' seconds and median peak MiB of each function, run
    round-robin (:func:`benchmarks._common.round_robin`)."""
    return round_robin(fns, repeats, warmup, log)


def bench_case(size: Sequence[int], roi: Sequence[int], overlap: float, sw_batch_sizes: Sequence[int],
               repeats: int, warmup: int, bare: bool, extra_variants: bool,
               compile_backend: str | None = None) -> tuple[dict[str, dict[str, float]], dict]:
    """Time the bare forward (if ``bare``) and sliding-window inference of one volume; with
    ``compile_backend`` also the bare forward of the model compiled as ``inference.py --compile``
    does (compiled before the timed rounds, by the logit comparison)."""
    torch.manual_seed(0)
    model = get_network("U_Net2D5", 1, 2).eval()
    image = synthetic_batch(size)["image"]
    fns: dict[str, Callable[[], torch.Tensor]] = {}
    if bare:
        window = image[(...,) + tuple(slice(0, min(r, s)) for r, s in zip(roi, size))].contiguous()
        name = "bare model(x)" if tuple(window.shape) == tuple(image.shape) else "bare model(window) x N"

        def forward() -> torch.Tensor:
            with torch.inference_mode():
                return model(window)
        fns[name] = forward
    for b in sw_batch_sizes:
        fns[f"sliding_window_predict sw={b}"] = lambda b=b: sliding_window_predict(model, image, roi, b, overlap)
    info: dict = {}
    if extra_variants:
        model_cl = get_network("U_Net2D5", 1, 2).eval()
        model_cl.load_state_dict(model.state_dict())
        model_cl = model_cl.to(memory_format=torch.channels_last_3d)
        image_cl = image.contiguous(memory_format=torch.channels_last_3d)

        def forward_cl() -> torch.Tensor:
            with torch.inference_mode():
                return model_cl(image_cl)

        def forward_bf16() -> torch.Tensor:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return model(image)

        fns["bare, channels_last_3d"] = forward_cl
        extra = [("channels_last_3d", forward_cl)]
        if compile_backend is not None:
            model_c = get_network("U_Net2D5", 1, 2).eval()
            model_c.load_state_dict(model.state_dict())
            maybe_compile(model_c, True, torch.device("cpu"), compile_backend)

            def forward_compiled() -> torch.Tensor:
                with torch.inference_mode():
                    return model_c(image)

            fns[f"bare, compiled ({compile_backend})"] = forward_compiled
            extra.append((f"compiled ({compile_backend})", forward_compiled))
        if cpu_native_bf16():  # elsewhere emulated, ~40x slower: never run
            fns["bare, cpu bf16 autocast"] = forward_bf16
            extra.append(("cpu bf16 autocast", forward_bf16))
        with torch.inference_mode():
            ref = model(image)
            for name, fn in extra:
                out = fn().float()
                info[name] = {"max_abs_diff": float((out - ref).abs().max()), "max_abs_logit": float(ref.abs().max()),
                              "argmax_changed": float((out.argmax(1) != ref.argmax(1)).float().mean())}
    return time_round_robin(fns, repeats, warmup), info


def format_table(rows: dict[str, dict], reference: str, windows: int) -> str:
    """Plain-text table: times (a ``... x N`` row is one window's forward, times N windows),
    seconds per window, peak memory, the ratio of medians to ``reference`` and the median of the
    per-round ratios (robust to load that changes between rounds)."""

    def scaled(name: str) -> list[float]:
        return [t * (windows if name.endswith("x N") else 1) for t in rows[name]["times"]]

    ref = scaled(reference)
    cells = []
    for name, r in rows.items():
        times = scaled(name)
        med = statistics.median(times)
        cells.append({"variant": name, "median_s": med, "min_s": min(times), "peak_mib": r["peak_mib"],
                      "per_window": med / windows if name.startswith("sliding") or name.endswith("x N") else med,
                      "ratio": f"{med / statistics.median(ref):.3f}x",
                      "per_round": f"{statistics.median(t / b for t, b in zip(times, ref)):.3f}x"})
    return f"ratios to: {reference}\n" + common_table(
        cells, [("variant", "variant", ""), ("median_s", "median s", ".3f"), ("min_s", "min s", ".3f"),
                ("per_window", "s/window", ".3f"), ("peak_mib", "peak MiB", ".0f"), ("ratio", "ratio", ""),
                ("per_round", "per-round", "")])


def main(argv: list[str] | None = None) -> str:
    p = ArgumentParser(description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--size", type=positive_int, nargs=3, default=[128, 128, 48], help="case 1 volume X Y Z")
    p.add_argument("--roi", type=positive_int, nargs=3, default=[128, 128, 48], help="sliding-window size X Y Z")
    p.add_argument("--large", type=positive_int, nargs=3, default=[256, 256, 64], help="case 2 volume X Y Z")
    p.add_argument("--no_large", dest="run_large", action="store_false", help="skip case 2")
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--repeats", type=positive_int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--large_repeats", type=positive_int, default=3)
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--no_variants", dest="variants", action="store_false",
                   help="skip the channels_last / bf16 / compiled forward variants of case 1")
    p.add_argument("--compile", action="store_true", help="add the compiled forward (inference.py --compile)")
    p.add_argument("--compile_backend", default="inductor", choices=COMPILE_BACKENDS)
    args = p.parse_args(argv)
    if not 0 <= args.overlap < 1:
        raise ValueError(f"--overlap must be in [0, 1), got {args.overlap}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    torch.set_num_threads(args.threads)
    out: list[str] = []

    def emit(text: str) -> None:
        print(text, flush=True)
        out.append(text)

    emit(machine())
    emit(f"CPU, {args.threads} threads, torch {torch.__version__}; U_Net2D5 (eval, random weights), roi "
         f"{'x'.join(map(str, args.roi))}, overlap {args.overlap}, gaussian blending; round-robin")
    rows, info = bench_case(args.size, args.roi, args.overlap, [1], args.repeats, args.warmup, True, args.variants,
                            args.compile_backend if args.compile else None)
    n = window_count(args.size, args.roi, args.overlap)
    emit(f"\n[case 1] {'x'.join(map(str, args.size))}: {n} window(s); median of {args.repeats} after "
         f"{args.warmup} warm-up")
    emit(format_table(rows, "bare model(x)", n))
    for name, d in info.items():
        emit(f"  {name}: max |logit diff| {d['max_abs_diff']:.3g} (max |logit| {d['max_abs_logit']:.3g}), "
             f"argmax changed on {100 * d['argmax_changed']:.3f}% of voxels")
    if args.run_large:
        rows, _ = bench_case(args.large, args.roi, args.overlap, [1, 4], args.large_repeats, args.warmup, True, False)
        n = window_count(args.large, args.roi, args.overlap)
        emit(f"\n[case 2] {'x'.join(map(str, args.large))}: {n} windows; median of {args.large_repeats} after "
             f"{args.warmup} warm-up")
        emit(format_table(rows, "bare model(window) x N", n))
    return "\n".join(out)


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
