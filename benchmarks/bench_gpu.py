"""GPU benchmark of the stage-1 and SCM training steps against the current code path, in one run.

Every row runs the trainers' own step (``Stage1Step``, ``SCMStep``) through the engine's backward
and ``Amp.step`` (``benchmarks/_common.py``) on a fixed synthetic batch, from the same initial
weights, in one setting:

- ``current``: the code path before ``--compile``: fp32 with PyTorch's defaults (cuDNN
  convolutions in TF32, ``cudnn.benchmark`` off), eager, contiguous tensors — the reference of
  the ratios and of the loss check;
- ``cudnn.benchmark``: what the trainers now do on CUDA (fixed patch size);
- ``fp32 no TF32``: ``torch.backends.cudnn.allow_tf32 = False`` (strict fp32 convolutions);
- ``bf16 autocast``: ``--amp`` (bf16 where supported, else fp16 with a GradScaler);
- ``compile``: ``--compile`` (TorchInductor, in place), with ``cudnn.benchmark``; ``+ bf16``;
  ``reduce-overhead``: ``torch.compile(mode="reduce-overhead")``, CUDA graphs of the network;
- ``channels-last``: model and input in ``torch.channels_last_3d``;

at batch 1 and 2. Columns: median and minimum step (ms) over ``--repeats`` after ``--warmup``
steps, the first step (compilation included), peak memory, the speed-up over ``current`` at the
same step and batch, and the largest relative difference of the logged loss(es) over the first
``--loss_steps`` steps against ``current`` (goal: 1e-4 in fp32; bf16 differs more, and says so).
The projection: a full VS stage 1 (``--train_cases`` patches × ``--epochs`` epochs at batch 1 and
validation of ``--val_cases`` whole volumes of ``--val_size`` every epoch with
``utilities.training.validation.evaluate``) for ``current``, the trainers' default, the fastest fp32 row
within the loss goal and the fastest row of all; patch loading is not included (2-4 ms a cached
patch on CPU, BENCHMARKS.md). Rows that do not apply to the device (bf16, TF32, cuDNN and CUDA
graphs on a CPU) are listed as skipped; a row that fails is reported and the others still run.

Example::

    python benchmarks/bench_gpu.py                                    # CUDA, the full set
    python benchmarks/bench_gpu.py --device cpu --quick --compile_backend aot_eager   # CPU smoke test
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import math
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

from benchmarks._common import Report, format_table, machine, scm_bench, stage1_bench, synthetic_batch, time_fn
from networks import get_network
from utilities.core.arguments import ArgumentParser
from utilities.core.compile import COMPILE_BACKENDS, compile_unavailable
from utilities.core.runtime import resolve_device
from utilities.method.optim import Amp
from utilities.training.validation import evaluate
from utilities.workflow.cli import positive_int

__all__ = ["Row", "default_rows", "run_row", "projection", "main"]


@dataclass(frozen=True)
class Row:
    """One setting of one step at one batch size."""

    name: str
    kind: str                    # "stage-1" or "SCM"
    batch: int = 1
    amp: bool = False
    compile: bool = False
    mode: str | None = None      # torch.compile mode
    channels_last: bool = False
    cudnn_benchmark: bool = False
    tf32: bool = True            # cuDNN convolutions in TF32 (PyTorch's default)
    cuda_only: bool = False      # the row differs from current only by CUDA settings

    @property
    def label(self) -> str:
        return f"{self.kind} b{self.batch} {self.name}"


CURRENT = "current"


def _settings(base: Row) -> list[Row]:
    return [base,
            replace(base, name="cudnn.benchmark (trainers now)", cudnn_benchmark=True, cuda_only=True),
            replace(base, name="fp32 no TF32", tf32=False, cudnn_benchmark=True, cuda_only=True),
            replace(base, name="bf16 autocast (--amp)", amp=True, cudnn_benchmark=True),
            replace(base, name="channels-last", channels_last=True, cudnn_benchmark=True),
            replace(base, name="compile", compile=True, cudnn_benchmark=True),
            replace(base, name="compile + bf16", compile=True, amp=True, cudnn_benchmark=True),
            replace(base, name="compile reduce-overhead", compile=True, mode="reduce-overhead", cudnn_benchmark=True)]


def default_rows(batches: Sequence[int] = (1, 2)) -> list[Row]:
    """The rows of the issue, most important first (a ``--budget_s`` cut drops the tail): every
    setting of both steps at the first batch size, then the other batch sizes."""
    rows = []
    for i, b in enumerate(batches):
        for kind in ("stage-1", "SCM"):
            rows += [r for r in _settings(Row(CURRENT, kind, b))
                     if i == 0 or r.name in (CURRENT, "cudnn.benchmark (trainers now)", "bf16 autocast (--amp)",
                                             "compile", "compile + bf16")]
    return rows


def not_applicable(row: Row, device: torch.device, backend: str) -> str | None:
    """Why ``row`` cannot run on ``device``, or None."""
    if device.type != "cuda":
        if row.amp:
            return "skipped: --amp (autocast) is CUDA-only; on CPU it stays fp32"
        if row.cuda_only:
            return "skipped: cuDNN settings, CUDA only"
        if row.mode == "reduce-overhead":
            return "skipped: CUDA graphs, CUDA only"
    if row.compile:
        reason = compile_unavailable(device, backend, training=True)
        if reason:
            return f"skipped: {reason}"
    return None


@contextlib.contextmanager
def backend_settings(row: Row, device: torch.device) -> Iterator[None]:
    """The row's cuDNN flags, restored after."""
    if device.type != "cuda":
        yield
        return
    old = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = row.cudnn_benchmark, row.tf32
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = old


def _loss_keys(kind: str) -> tuple[str, ...]:
    return ("loss",) if kind == "stage-1" else ("loss1", "loss2")


def run_row(row: Row, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Build the row's bench, run ``warmup + repeats`` steps; the timings and every step's losses."""
    if row.compile:
        torch._dynamo.reset()  # a fresh compile per row (no recompile limit across rows)
    batch = synthetic_batch(args.size, row.batch, device=device)
    common = dict(amp=row.amp, channels_last=row.channels_last, compile=row.compile, backend=args.compile_backend,
                  mode=row.mode)
    with backend_settings(row, device):
        if row.kind == "stage-1":
            bench = stage1_bench(batch, device, args.down_size, args.radius, **common)
        else:
            bench = scm_bench(batch, device, **common)
        losses: list[tuple[float, ...]] = []
        keys = _loss_keys(row.kind)

        def step() -> None:
            values = bench.step()
            losses.append(tuple(values[k] for k in keys))

        first = time_fn(step, device, 1, 0)["median_s"]
        r = time_fn(step, device, args.repeats, max(args.warmup - 1, 0))
    gc.collect()
    return {"label": row.label, "note": "", "median_ms": 1e3 * r["median_s"], "min_ms": 1e3 * r["min_s"],
            "first_ms": 1e3 * first, "peak_mib": r["peak_mib"], "losses": losses}


def validation_seconds(args: argparse.Namespace, device: torch.device, compile: bool, amp: bool,
                       cudnn_benchmark: bool) -> float:
    """Seconds to validate one volume of ``--val_size`` (median over ``--val_timed`` volumes after
    two untimed ones) with ``utilities.training.validation.evaluate``: sliding window, argmax, Dice."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    from utilities.core.compile import maybe_compile

    model = maybe_compile(get_network("U_Net2D5", 1, 2).to(device).eval(), compile, device, args.compile_backend)
    volume = synthetic_batch(args.val_size, 1, seed=1)
    batch = {"image": volume["image"], "label": (volume["seeds"] == 1).to(torch.uint8), "subject": ["case"]}
    amp_ = Amp(amp, device)
    row = Row("validation", "val", cudnn_benchmark=cudnn_benchmark)
    with backend_settings(row, device):
        r = time_fn(lambda: evaluate(model, [batch], tuple(args.size), device, 1, 0.25, amp_), device,
                    args.val_timed, 2)
    return r["median_s"]


def projection(step_s: float, val_s: float, args: argparse.Namespace) -> dict[str, float]:
    """Per-epoch and whole-run seconds of the full VS stage 1 at batch 1."""
    epoch = args.train_cases * step_s + args.val_cases * val_s
    return {"epoch_s": epoch, "total_min": epoch * args.epochs / 60}


def _max_rel_diff(losses: list[tuple[float, ...]], ref: list[tuple[float, ...]], n: int) -> float:
    pairs = [(a, b) for la, lb in zip(losses[:n], ref[:n]) for a, b in zip(la, lb)]
    if not pairs:
        return math.nan
    return max(abs(a - b) / max(abs(b), 1e-12) for a, b in pairs)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes and few steps (32x32x16 patch, 2 timed steps): a smoke test, also on CPU")
    p.add_argument("--size", type=positive_int, nargs=3, default=None, help="patch X Y Z (default 128 128 48)")
    p.add_argument("--down_size", type=positive_int, nargs=3, default=None, help="mCRF size (default 64 64 48)")
    p.add_argument("--radius", type=positive_int, default=5, help="mCRF kernel radius")
    p.add_argument("--repeats", type=positive_int, default=None, help="timed steps per row (default 20)")
    p.add_argument("--warmup", type=positive_int, default=None,
                   help="untimed steps per row, the first included (default 5: compilation and autotuning)")
    p.add_argument("--loss_steps", type=positive_int, default=20, help="steps compared with the current path")
    p.add_argument("--batches", type=positive_int, nargs="+", default=[1, 2], help="batch sizes")
    p.add_argument("--steps", nargs="+", default=["stage-1", "SCM"], choices=["stage-1", "SCM"])
    p.add_argument("--only", nargs="+", default=None, metavar="NAME",
                   help="run only the rows with these names (current is always run)")
    p.add_argument("--compile_backend", default="inductor", choices=COMPILE_BACKENDS)
    p.add_argument("--val_size", type=positive_int, nargs=3, default=None,
                   help="validation volume X Y Z (default 128 128 48, a VS crop)")
    p.add_argument("--val_timed", type=positive_int, default=None, help="validation volumes timed (default 5)")
    p.add_argument("--train_cases", type=positive_int, default=176, help="training patches per epoch (VS: 176)")
    p.add_argument("--val_cases", type=positive_int, default=20, help="validation volumes per epoch (VS: 20)")
    p.add_argument("--epochs", type=positive_int, default=300, help="epochs of stage 1 (paper: 300)")
    p.add_argument("--no_projection", dest="project", action="store_false", help="skip the validation timing")
    p.add_argument("--budget_s", type=positive_int, default=None,
                   help="start no new row after this many seconds (compilations take ~1 min each); the "
                        "rows not run are listed")
    return p


def main(argv: list[str] | None = None) -> str:
    args = build_parser().parse_args(argv)
    quick = args.quick
    defaults = {"size": [32, 32, 16] if quick else [128, 128, 48], "down_size": [16, 16, 16] if quick else [64, 64, 48],
                "repeats": 2 if quick else 20, "warmup": 1 if quick else 5,
                "val_size": [32, 32, 16] if quick else [128, 128, 48], "val_timed": 1 if quick else 5}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if any(s % 16 for s in args.size):
        raise ValueError(f"--size must be divisible by 16 in every axis, got {args.size}")
    if any(d > s for d, s in zip(args.down_size, args.size)):
        raise ValueError(f"--down_size {args.down_size} must not exceed --size {args.size} in any axis")
    device = resolve_device(args.device)
    report = Report()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    report(machine())
    report(f"device: {name}; torch {torch.__version__}; patch {'x'.join(map(str, args.size))}, mCRF at "
           f"{'x'.join(map(str, args.down_size))} r {args.radius}; median of {args.repeats} steps after "
           f"{args.warmup}; compile backend {args.compile_backend}")

    results, table = _run_rows(args, device, report)
    columns = [("label", "row", ""), ("median_ms", "median ms", ".2f"), ("min_ms", "min ms", ".2f"),
               ("first_ms", "1st step ms", ".0f"), ("peak_mib", "peak MiB", ".0f"), ("speedup", "vs current", ""),
               ("loss_diff", "loss rel diff", ".1e"), ("note", "", "")]
    report("\n[steps] ms per training step; 'vs current' = current median / row median (same step and batch); "
           f"'loss rel diff' = max relative difference of the logged loss over the first {args.loss_steps} "
           "steps from the same weights")
    report(format_table(table, columns))
    if args.project and 1 in args.batches and "stage-1" in args.steps:
        _projection(args, device, results, report)
    return report.text()


def _run_rows(args: argparse.Namespace, device: torch.device, report: Report
              ) -> tuple[dict[Row, dict[str, Any]], list[dict[str, Any]]]:
    """Every selected row (a failure is reported and the others go on); its speed-up and loss
    difference against the current path of the same step and batch."""
    rows = [r for r in default_rows(args.batches) if r.kind in args.steps
            and (args.only is None or r.name in args.only or r.name == CURRENT)]
    results: dict[Row, dict[str, Any]] = {}
    table: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for row in rows:
        skip = not_applicable(row, device, args.compile_backend)
        if not skip and args.budget_s is not None and time.perf_counter() - t_start > args.budget_s:
            skip = f"not run: --budget_s {args.budget_s} reached"
        if skip:
            table.append({"label": row.label, "note": skip})
            continue
        try:
            r = run_row(row, args, device)
        except Exception as e:  # one device run, one chance: report and go on
            traceback.print_exc(file=sys.stdout)
            table.append({"label": row.label, "note": f"FAILED: {type(e).__name__}: {str(e).splitlines()[0][:80]}"})
            continue
        ref = results.get(Row(CURRENT, row.kind, row.batch))
        if ref is not None:
            r["speedup"] = f"{ref['median_ms'] / r['median_ms']:.2f}x"
            r["loss_diff"] = _max_rel_diff(r["losses"], ref["losses"], args.loss_steps)
        results[row] = r
        table.append(r)
        report(f"  {row.label}: {r['median_ms']:.2f} ms")
    return results, table


def _projection(args: argparse.Namespace, device: torch.device, results: dict[Row, dict[str, Any]],
                report: Report) -> None:
    """The full VS stage 1 projected from the measured steps and a validation pass."""
    stage1 = {row: r for row, r in results.items() if row.kind == "stage-1" and row.batch == 1}
    candidates = {"current path": next((row for row in stage1 if row.name == CURRENT), None),
                  "trainers' default": next((row for row in stage1 if row.cudnn_benchmark and not row.amp
                                             and not row.compile and row.tf32 and not row.channels_last), None)}
    fp32 = [row for row in stage1 if not row.amp and stage1[row].get("loss_diff", 0.0) <= 1e-4]
    if fp32:
        candidates["fastest fp32 (loss within 1e-4)"] = min(fp32, key=lambda row: stage1[row]["median_ms"])
    if stage1:
        candidates["fastest of all"] = min(stage1, key=lambda row: stage1[row]["median_ms"])
    report(f"\n[projection] full VS stage 1: {args.train_cases} patches x {args.epochs} epochs at batch 1 + "
           f"validation of {args.val_cases} volumes {'x'.join(map(str, args.val_size))} every epoch "
           "(patch loading not included); goal <= 15 min")
    lines = []
    val_cache: dict[tuple[bool, bool, bool], float] = {}
    for what, row in candidates.items():
        if row is None:
            continue
        key = (row.compile, row.amp, row.cudnn_benchmark)
        if key not in val_cache:
            try:
                val_cache[key] = validation_seconds(args, device, *key)
            except Exception as e:  # a failed validation timing: reported, the other rows go on
                traceback.print_exc(file=sys.stdout)
                lines.append({"what": what, "row": row.name, "note": f"validation FAILED: {type(e).__name__}"})
                continue
        step_s = stage1[row]["median_ms"] / 1e3
        proj = projection(step_s, val_cache[key], args)
        lines.append({"what": what, "row": row.name, "step_ms": 1e3 * step_s, "val_ms": 1e3 * val_cache[key],
                      "epoch_s": proj["epoch_s"], "total_min": proj["total_min"],
                      "goal": "met" if proj["total_min"] <= 15 else "not met", "note": ""})
    report(format_table(lines, [("what", "projection", ""), ("row", "row", ""), ("step_ms", "step ms", ".2f"),
                                ("val_ms", "val ms/volume", ".1f"), ("epoch_s", "s/epoch", ".2f"),
                                ("total_min", "total min", ".1f"), ("goal", "<= 15 min", ""),
                                ("note", "", "")]))


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
