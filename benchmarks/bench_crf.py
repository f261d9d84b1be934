"""Benchmark the fast multi-view gated CRF loss against the unfold implementation (the test oracle).

Each (size, variant) runs in its own subprocess so that its extra peak memory can be read cleanly:
on CPU the growth of the peak resident set size over the resident size just before the runs
(``/proc/self/status`` VmHWM after resetting it, else ``ru_maxrss``), on CUDA
``torch.cuda.max_memory_allocated`` over the memory allocated before. Time is the median of
``--repeats`` forward+backward passes after ``--warmup`` untimed ones. Inputs are given at the
benchmarked size (no resizing), so only the CRF itself is compared. The unfold baseline is not
run at the full-resolution sizes (``--full_sizes``): it would need several GB and tens of seconds.

Example::

    python benchmarks/bench_crf.py --repeats 5 --warmup 1 --threads 2
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

from benchmarks._common import format_table as common_table
from benchmarks._common import machine, peak_tracker, sync
from benchmarks.crf_reference import unfold_multiview_crf
from utilities.core.arguments import ArgumentParser
from utilities.core.runtime import resolve_device
from utilities.method.losses import CRF_IMPLEMENTATIONS, MultiViewGatedCRFLoss
from utilities.workflow.cli import positive_int

__all__ = ["parse_size", "make_inputs", "run_worker", "benchmark", "format_table", "main"]

VARIANTS = ("unfold",) + tuple(f"fast-{impl}" for impl in CRF_IMPLEMENTATIONS)


def parse_size(text: str) -> tuple[int, int, int]:
    """``"64x64x48"`` -> (64, 64, 48)."""
    try:
        size = tuple(int(s) for s in text.lower().split("x"))
    except ValueError:
        size = ()
    if len(size) != 3 or min(size) < 1:
        raise argparse.ArgumentTypeError(f"size must look like 64x64x48, got {text}")
    return size  # type: ignore[return-value]


def make_inputs(size: tuple[int, int, int], batch: int, classes: int, device: torch.device,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits (N, C, X, Y, Z) and a smooth z-scored image (N, 1, X, Y, Z)."""
    gen = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(batch, classes, *size, generator=gen)
    image = F.avg_pool3d(torch.randn(batch, 1, *size, generator=gen), 5, stride=1, padding=2)
    image = (image - image.mean()) / image.std()
    return logits.to(device), image.to(device)


def _loss_fn(variant: str, radius: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if variant.startswith("fast-"):
        module = MultiViewGatedCRFLoss(down_size=None, kernel_radius=radius, implementation=variant[5:])
        return lambda x, img: module(x, img)
    if variant == "unfold":
        return lambda x, img: unfold_multiview_crf(x, img, down_size=None, kernel_radius=radius).mean()
    raise ValueError(f"unknown variant {variant}, choose from {VARIANTS}")


def run_worker(variant: str, size: tuple[int, int, int], batch: int, classes: int, radius: int,
               repeats: int, warmup: int, device: torch.device) -> dict:
    """Time and measure one variant in this process; returns a dict of results."""
    logits, image = make_inputs(size, batch, classes, device)
    fn = _loss_fn(variant, radius)

    def step() -> float:
        x = logits.clone().requires_grad_()
        sync(device)
        start = time.perf_counter()
        loss = fn(x, image)
        loss.backward()
        sync(device)
        return time.perf_counter() - start

    gc.collect()
    with peak_tracker(device) as peak:
        for _ in range(warmup):
            step()
        times = [step() for _ in range(repeats)]
    return {"variant": variant, "size": list(size), "median_s": statistics.median(times), "times_s": times,
            "extra_peak_bytes": int(peak["peak_mib"] * 2**20)}


def grad_check(variant: str, size: tuple[int, int, int], batch: int, classes: int, radius: int,
               device: torch.device) -> dict:
    """Largest |fast − unfold| gradient entry relative to the largest unfold gradient entry, and
    both values (the unfold oracle run without padded neighbours, our definition)."""
    logits, image = make_inputs(size, batch, classes, device)
    grads, values = [], []
    for name in ("unfold", variant):
        x = logits.clone().requires_grad_()
        loss = _loss_fn(name, radius)(x, image)
        loss.backward()
        grads.append(x.grad)
        values.append(loss.item())
    rel = ((grads[1] - grads[0]).abs().max() / grads[0].abs().max()).item()
    return {"grad_max_rel_diff": rel, "value_unfold": values[0], "value_fast": values[1]}


def _spawn(args: argparse.Namespace, mode: str, variant: str, size: tuple[int, int, int]) -> dict:
    """One (mode, variant, size) in its own process (``--in_process``: in this one)."""
    if args.in_process:
        device = torch.device(args.device)
        if mode == "time":
            return run_worker(variant, size, args.batch, args.classes, args.radius, args.repeats, args.warmup, device)
        return grad_check(variant, size, args.batch, args.classes, args.radius, device)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", mode, "--_variant", variant,
           "--sizes", "x".join(map(str, size)), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--batch", str(args.batch), "--classes", str(args.classes),
           "--radius", str(args.radius), "--device", args.device]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker {mode}/{variant} at {size} failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def benchmark(args: argparse.Namespace) -> list[dict]:
    """All rows: each size with both variants (+ gradient check), each full size fast only."""
    results = []
    fast_variants = [f"fast-{impl}" for impl in args.implementations]
    for size in args.sizes:
        base = _spawn(args, "time", "unfold", size)
        results.append(base)
        for variant in fast_variants:
            r = _spawn(args, "time", variant, size)
            if args.check:
                r.update(_spawn(args, "check", variant, size))
            results.append(r)
        for r in results[-1 - len(fast_variants):]:
            r["speedup"] = base["median_s"] / r["median_s"]
            r["mem_ratio"] = base["extra_peak_bytes"] / max(r["extra_peak_bytes"], 1)
    for size in args.full_sizes:
        for variant in fast_variants:
            r = _spawn(args, "time", variant, size)
            r.update(speedup=None, mem_ratio=None, note="unfold baseline not run: several GB")
            results.append(r)
    return results


def format_table(rows: list[dict]) -> str:
    """Plain-text table of the rows (:func:`benchmarks._common.format_table`)."""
    cells = [{"size": "x".join(map(str, r["size"])), "variant": r["variant"], "median_s": r["median_s"],
              "peak": r["extra_peak_bytes"] / 2**20,
              "speedup": f"{r['speedup']:.1f}x" if r.get("speedup") is not None else "n/a",
              "mem": f"{r['mem_ratio']:.1f}x" if r.get("mem_ratio") is not None else "n/a",
              "grad": r.get("grad_max_rel_diff"), "note": f"({r['note']})" if "note" in r else ""} for r in rows]
    return common_table(cells, [("size", "size", ""), ("variant", "variant", ""),
                                ("median_s", "median fwd+bwd s", ".4f"), ("peak", "extra peak MiB", ".1f"),
                                ("speedup", "speed-up", ""), ("mem", "mem ratio", ""),
                                ("grad", "grad rel diff", ".1e"), ("note", "", "")])


def main(argv: list[str] | None = None) -> str:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed fwd+bwd passes (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed fwd+bwd passes first")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch CPU threads")
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=[(64, 64, 48)],
                        help="sizes X x Y x Z run with both variants")
    parser.add_argument("--full_sizes", type=parse_size, nargs="*", default=[(128, 128, 48)],
                        help="full-resolution sizes run with the fast variant only")
    parser.add_argument("--batch", type=positive_int, default=1)
    parser.add_argument("--classes", type=positive_int, default=2)
    parser.add_argument("--radius", type=positive_int, default=5)
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--implementations", nargs="+", choices=CRF_IMPLEMENTATIONS, default=["auto"],
                        help="fast-loss implementations to run (auto: shifts on CPU, rows on CUDA)")
    parser.add_argument("--no_check", dest="check", action="store_false",
                        help="skip the fast-vs-unfold gradient comparison")
    parser.add_argument("--in_process", action="store_true",
                        help="run every variant in this process (quick, for smoke tests: the peak memory of a "
                             "variant then includes what earlier ones left)")
    parser.add_argument("--_worker", choices=["time", "check"], help=argparse.SUPPRESS)
    parser.add_argument("--_variant", choices=VARIANTS, default="fast-auto", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    if args.classes < 2:
        raise ValueError(f"--classes must be >= 2, got {args.classes}")
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    args.device = device.type
    if args._worker is not None:
        size = args.sizes[0]
        if args._worker == "time":
            result = run_worker(args._variant, size, args.batch, args.classes, args.radius, args.repeats,
                                args.warmup, device)
        else:
            result = grad_check(args._variant, size, args.batch, args.classes, args.radius, device)
        out = json.dumps(result)
        print(out)
        return out
    rows = benchmark(args)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    table = (f"{machine()}\ndevice: {name}; batch {args.batch}, {args.classes} classes, radius {args.radius}, 3 views, "
             f"median of {args.repeats} after {args.warmup} warm-up\n" + format_table(rows))
    print(table)
    return table


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
