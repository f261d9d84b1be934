"""Benchmark the stage-1 training step on CPU (fast vs unfold mCRF, CPU settings) and the patch loading.

The step is the stage-1 script's own (``Stage1Step`` with ``--rampup_epochs 0``: U_Net2D5
forward, ``PartialDiceCELoss`` + 1.0 · ``MultiViewGatedCRFLoss`` (resized to ``--down_size``,
radius ``--radius``) + 0.1 · ``VarianceLoss``), run by the trainers' own
``utilities.training.engine.train_step`` (``benchmarks/_common.py``): ``zero_grad``, the step, the
``float()`` of every logged value, the engine's backward (each term's gradient w.r.t. the logits,
then one backward through the network) and ``Amp.step`` of the paper's SGD.
Each variant has its own model (same initial weights) and all variants are run round-robin, one
step each per round, so that the load of a shared machine falls on all of them alike; medians
and minima are over the rounds after the warm-up rounds. Variants:

- ``unfold``: the mCRF of ``benchmarks/crf_reference.py`` (the published code's unfold formulation);
- ``fast``: the repository as it is (fast mCRF, contiguous tensors, PyTorch defaults);
- ``fast+channels_last``: model and input in ``torch.channels_last_3d``;
- ``fast+cpu_bf16_autocast``: ``torch.autocast("cpu", dtype=torch.bfloat16)`` around the forward
  (the losses compute in float32 anyway); never in the defaults, and skipped on a CPU without
  native bf16 (AVX512-BF16/AMX), where it is emulated (~110 s a step on AVX2);
- ``fast+conv_bf16``: ``torch.backends.mkldnn.conv.fp32_precision = "bf16"`` (oneDNN convolutions
  in bf16 on fp32 tensors);
- ``fast+flush_denormal``: ``torch.set_flush_denormal(True)``;
- ``fast+no_mkldnn``: ``torch.backends.mkldnn.enabled = False`` (to show what oneDNN brings);
- ``fast+crf_1thread``: ``torch.set_num_threads(1)`` while the mCRF loss's forward runs (its ~1000
  small ops each end at an OpenMP barrier, which stalls when a thread is descheduled on a busy
  machine), the previous count restored after;
- ``fast+1thread``: the whole step with one thread;
- ``fast+compile``: the network compiled in place as ``--compile`` does (``--compile_backend``);
  the compilation falls in the warm-up rounds.

Time of each phase: forward, each loss's forward, the rest (``zero_grad`` and the step
function's own sums and logged fractions), backward (from the step function's return to
``Amp.step``: the engine's ``float()`` and finiteness check of the logged values, microseconds,
then its per-term gradients and the network's backward), optimizer. Only the step object's
network and losses and ``Amp.step`` are wrapped by timers; ``train_step`` itself is not touched.
The losses' own forward+backward is also timed alone on a detached copy of the logits (after
each round of steps), which splits the backward into its loss part and its network part. Peak
memory is the growth of the kernel's peak resident set (VmHWM, reset before each step) over the
resident set before the step. ``--data`` adds the patch-loading benchmark: synthetic NIfTI
volumes written to a temporary folder, loaded through ``SubjectCache``/``PatchDataset`` (first
load: decode, check and preprocess; later loads: from the cache), and its ratio to the step.

Example::

    python benchmarks/bench_step.py --repeats 5 --warmup 1 --threads 2 --data
"""
from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

from benchmarks._common import cpu_native_bf16, machine, peak_tracker, stage1_bench, synthetic_batch
from benchmarks.crf_reference import unfold_multiview_crf
from utilities.core.arguments import ArgumentParser
from utilities.core.compile import COMPILE_BACKENDS, compile_unavailable
from utilities.method.losses import MultiViewGatedCRFLoss, PartialDiceCELoss, VarianceLoss
from utilities.workflow.cli import positive_int

__all__ = ["Variant", "VARIANTS", "StepRunner", "synthetic_batch", "peak_tracker", "run_steps",
           "LossBench", "bench_data", "format_step_table", "format_phase_table", "main"]

PHASES = ("forward", "loss_seg", "loss_crf", "loss_vm", "rest", "backward", "optimizer")


@dataclass(frozen=True)
class Variant:
    """One way of running the step."""

    name: str
    crf: str = "fast"                 # "fast" (utilities.method.losses) or "unfold" (benchmarks/crf_reference.py)
    channels_last: bool = False
    cpu_bf16_autocast: bool = False
    conv_bf16: bool = False
    flush_denormal: bool = False
    mkldnn: bool = True
    threads: int | None = None        # torch threads for the whole step (None: --threads)
    crf_threads: int | None = None    # torch threads while the mCRF loss runs (None: unchanged)
    compile: bool = False


VARIANTS = {v.name: v for v in (
    Variant("unfold", crf="unfold"),
    Variant("fast"),
    Variant("fast+channels_last", channels_last=True),
    Variant("fast+cpu_bf16_autocast", cpu_bf16_autocast=True),
    Variant("fast+conv_bf16", conv_bf16=True),
    Variant("fast+flush_denormal", flush_denormal=True),
    Variant("fast+no_mkldnn", mkldnn=False),
    Variant("fast+crf_1thread", crf_threads=1),
    Variant("fast+1thread", threads=1),
    Variant("fast+compile", compile=True),
)}
DEFAULT_VARIANTS = ("unfold", "fast", "fast+channels_last", "fast+conv_bf16", "fast+flush_denormal")


class _Timed:
    """Calls ``fn`` and adds its seconds to ``times[name]`` (inside ``context()`` if given); the
    clock at the call's start and end goes to ``marks[name] = (start, end)`` when ``marks`` is given."""

    def __init__(self, fn: Callable[..., Any], times: dict[str, float], name: str,
                 context: Callable[[], contextlib.AbstractContextManager] | None = None,
                 marks: dict[str, tuple[float, float]] | None = None) -> None:
        self.fn, self.times, self.name, self.context = fn, times, name, context or contextlib.nullcontext
        self.marks = marks

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        with self.context():
            out = self.fn(*args, **kwargs)
        t1 = time.perf_counter()
        self.times[self.name] = self.times.get(self.name, 0.0) + t1 - t0
        if self.marks is not None:
            self.marks[self.name] = (t0, t1)
        return out


class StepRunner:
    """The stage-1 script's step on one model, run as one variant, its phases timed by wrapping
    the step object's network and losses."""

    def __init__(self, variant: Variant, batch: dict[str, torch.Tensor], down_size: Sequence[int],
                 radius: int, seed: int = 0, backend: str = "inductor") -> None:
        self.variant = variant
        self.bench = stage1_bench(batch, torch.device("cpu"), down_size, radius, channels_last=variant.channels_last,
                                  compile=variant.compile, backend=backend, seed=seed)
        step = self.bench.step_fn
        self.model = step.model
        self.times: dict[str, float] = {}
        self.marks: dict[str, tuple[float, float]] = {}
        if variant.crf == "unfold":
            def unfold(x: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
                return unfold_multiview_crf(x.float(), img.float(), down_size=tuple(down_size),
                                            kernel_radius=radius).mean()
            step.crf_loss = unfold
        elif variant.crf != "fast":
            raise ValueError(f"unknown crf {variant.crf!r}, choose 'fast' or 'unfold'")

        def bf16() -> contextlib.AbstractContextManager:
            return torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant.cpu_bf16_autocast)

        step.model = _Timed(self.model, self.times, "forward", bf16)
        step.seg_loss = _Timed(step.seg_loss, self.times, "loss_seg")
        step.crf_loss = _Timed(step.crf_loss, self.times, "loss_crf",
                               (lambda: _threads(variant.crf_threads)) if variant.crf_threads else None)
        step.var_loss = _Timed(step.var_loss, self.times, "loss_vm")
        amp = self.bench.state.amp
        amp.step = _Timed(amp.step, self.times, "optimizer", marks=self.marks)  # type: ignore[method-assign]
        # the step object itself, as engine.train_step calls it: its return starts the backward phase
        self.bench.step_fn = _Timed(step, {}, "step_fn", marks=self.marks)

    @contextlib.contextmanager
    def settings(self) -> Iterator[None]:
        """Apply the variant's global backend flags, restore the previous ones after."""
        old = (torch.backends.mkldnn.enabled, torch.backends.mkldnn.conv.fp32_precision)
        threads = torch.get_num_threads()
        if self.variant.threads is not None:
            torch.set_num_threads(self.variant.threads)
        torch.backends.mkldnn.enabled = self.variant.mkldnn
        torch.backends.mkldnn.conv.fp32_precision = "bf16" if self.variant.conv_bf16 else "none"
        torch.set_flush_denormal(self.variant.flush_denormal)
        try:
            yield
        finally:
            torch.backends.mkldnn.enabled, torch.backends.mkldnn.conv.fp32_precision = old
            torch.set_flush_denormal(False)
            torch.set_num_threads(threads)

    def step(self) -> dict[str, Any]:
        """One training step; returns the seconds of each phase, ``total``, ``cpu`` (process CPU
        seconds), ``peak_mib`` and the loss ``terms``."""
        self.times.clear()
        self.marks.clear()
        with self.settings(), peak_tracker() as peak:
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            values = self.bench.step()
            total = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
        times = {p: self.times.get(p, 0.0) for p in PHASES if p not in ("rest", "backward")}
        times["backward"] = self._backward_seconds()
        inner = times["forward"] + times["loss_seg"] + times["loss_crf"] + times["loss_vm"]
        times["rest"] = total - inner - times["backward"] - times["optimizer"]
        terms = {k: values[k] for k in ("loss", "loss_seg", "loss_crf", "loss_vm")}
        return {**times, "total": total, "cpu": cpu, "peak_mib": peak["peak_mib"], "terms": terms}

    def _backward_seconds(self) -> float:
        """Seconds from the step function's return to ``Amp.step``'s start: what
        ``engine.train_step`` does in between (the ``float()`` and finiteness check of the logged
        values, microseconds; each term's gradient w.r.t. its logits; one network backward)."""
        if "step_fn" not in self.marks or "optimizer" not in self.marks:
            raise RuntimeError("engine.train_step did not call the step function and then Amp.step once each; "
                               "bench_step.py's phase timing no longer matches the engine")
        return self.marks["optimizer"][0] - self.marks["step_fn"][1]

    def logits(self) -> torch.Tensor:
        """Logits of the current model (no gradient), float32, contiguous."""
        image = self.bench.batch["image"]
        with torch.no_grad(), self.settings():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.variant.cpu_bf16_autocast):
                out = self.model(image)
        return out.float().contiguous()


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run_steps(runners: Sequence[StepRunner], repeats: int, warmup: int,
              extra: Callable[[bool], None] | None = None,
              log: Callable[[str], None] = print) -> dict[str, list[dict]]:
    """Round-robin: each round runs one step of every runner (then ``extra(timed)``); returns the
    timed rounds' results per variant name."""
    results: dict[str, list[dict]] = {r.variant.name: [] for r in runners}
    for round_ in range(warmup + repeats):
        for runner in runners:
            r = runner.step()
            if round_ >= warmup:
                results[runner.variant.name].append(r)
        if extra is not None:
            extra(round_ >= warmup)
        timed = "warm-up" if round_ < warmup else "timed"
        log(f"round {round_ + 1}/{warmup + repeats} ({timed}): "
            + ", ".join(f"{r.variant.name} {results[r.variant.name][-1]['total']:.2f}s"
                        if round_ >= warmup else r.variant.name for r in runners))
    return results


class LossBench:
    """Each loss's forward+backward alone on a detached leaf copy of fixed ``logits``; one
    :meth:`round` times each loss once (run between the step rounds, so both see the same load)."""

    def __init__(self, logits: torch.Tensor, batch: dict[str, torch.Tensor], down_size: Sequence[int],
                 radius: int) -> None:
        image, seeds = batch["image"], batch["seeds"]
        seg, vm = PartialDiceCELoss(2), VarianceLoss()
        fast = MultiViewGatedCRFLoss(down_size=tuple(down_size), kernel_radius=radius)
        self.logits = logits.detach()
        self.fns: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
            "partial DiceCE": lambda x: seg(x, seeds),
            "mCRF fast": lambda x: fast(x, image),
            "mCRF unfold": lambda x: unfold_multiview_crf(x, image, down_size=tuple(down_size),
                                                          kernel_radius=radius).mean(),
            "VM": lambda x: vm(x, image),
        }
        self.times: dict[str, dict[str, list[float]]] = {k: {"forward": [], "fwd+bwd": [], "peak_mib": []}
                                                         for k in self.fns}

    def round(self, record: bool = True) -> None:
        for name, fn in self.fns.items():
            x = self.logits.clone().requires_grad_()
            with peak_tracker() as peak:
                t0 = time.perf_counter()
                loss = fn(x)
                t1 = time.perf_counter()
                loss.backward()
                t2 = time.perf_counter()
            if record:
                self.times[name]["forward"].append(t1 - t0)
                self.times[name]["fwd+bwd"].append(t2 - t0)
                self.times[name]["peak_mib"].append(peak["peak_mib"])

    def summary(self) -> dict[str, dict[str, float]]:
        """Median forward, fwd+bwd (s) and peak (MiB) of each loss over the recorded rounds."""
        return {name: {k: statistics.median(v) for k, v in d.items()} for name, d in self.times.items()}


def bench_data(size: Sequence[int], subjects: int, repeats: int) -> dict[str, Any]:
    """Patch loads through ``PatchDataset`` from synthetic NIfTI files (image float32, seeds uint8)
    of ``size`` in a temporary folder: the first load of each subject (decode + check + preprocess)
    and ``repeats`` cached loads of each, with the DataLoader's collate. Seconds."""
    import numpy as np
    import pandas as pd
    import SimpleITK as sitk
    from torch.utils.data import default_collate

    from utilities.data.io import save_csv, write_image
    from utilities.data.loading import ImageSource, PatchDataset, load_phase

    x, y, z = size
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = [f"case{i:02d}" for i in range(subjects)]
        rng = np.random.default_rng(0)
        for name in names:
            batch = synthetic_batch(size, seed=int(rng.integers(1 << 30)))
            image = batch["image"][0, 0].numpy().transpose(2, 1, 0)          # SimpleITK order (z, y, x)
            seeds = batch["seeds"][0, 0].numpy().astype(np.uint8).transpose(2, 1, 0)
            for array, folder, postfix in ((image, "image", "T2"), (seeds, "seeds", "GeodesicLabel")):
                img = sitk.GetImageFromArray(np.ascontiguousarray(array))
                img.SetSpacing((0.4, 0.4, 1.5))
                (root / folder).mkdir(exist_ok=True)
                write_image(img, root / folder / f"{name}_{postfix}.nii.gz")
        save_csv(pd.DataFrame({"subject": names, "phase": ["training"] * subjects}), root / "split.csv")
        sources = [ImageSource("image", root / "image", "T2", False, "image"),
                   ImageSource("seeds", root / "seeds", "GeodesicLabel", True, "expanded-seed label")]
        cache = load_phase(root / "split.csv", "training", sources, cache_gb=8.0, fill=False)
        dataset = PatchDataset(cache, (x, y, z))

        def load(i: int) -> float:
            t0 = time.perf_counter()
            item = default_collate([dataset[i]])
            dt = time.perf_counter() - t0
            if tuple(item["image"].shape) != (1, 1, x, y, z):
                raise RuntimeError(f"unexpected patch shape {tuple(item['image'].shape)}")
            return dt

        first = [load(i) for i in range(subjects)]
        cached = [load(i) for _ in range(repeats) for i in range(subjects)]
    return {"first": first, "cached": cached, "first_median": statistics.median(first),
            "cached_median": statistics.median(cached), "cached_min": min(cached),
            "cached_mib": cache.cached_bytes / 2**20}


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def format_step_table(results: dict[str, list[dict]], reference: str = "fast", baseline: str = "unfold") -> str:
    """Per variant: median and min step time, CPU time, peak memory, speed-ups (ratio of medians,
    and the median of the per-round ratios, which is robust to load that changes between rounds),
    the loss of the first timed step and the number of timed steps with a non-finite loss."""
    head = (f"{'variant':<24} {'median s':>9} {'min s':>7} {'CPU s':>7} {'peak MiB':>9} "
            f"{'vs ' + baseline:>10} {'per-round':>9} {'vs ' + reference:>9} {'per-round':>9} {'loss':>9} {'NaN':>4}")
    lines = [head, "-" * len(head)]

    def speedups(ref_name: str, rows: list[dict]) -> tuple[str, str]:
        if ref_name not in results:
            return "n/a", "n/a"
        ref = results[ref_name]
        ratio = _median(ref, "total") / _median(rows, "total")
        per_round = statistics.median(a["total"] / b["total"] for a, b in zip(ref, rows))
        return f"{ratio:.2f}x", f"{per_round:.2f}x"

    for name, rows in results.items():
        b_ratio, b_round = speedups(baseline, rows)
        r_ratio, r_round = speedups(reference, rows)
        lines.append(f"{name:<24} {_median(rows, 'total'):>9.2f} {min(r['total'] for r in rows):>7.2f} "
                     f"{_median(rows, 'cpu'):>7.2f} {_median(rows, 'peak_mib'):>9.0f} {b_ratio:>10} {b_round:>9} "
                     f"{r_ratio:>9} {r_round:>9} {rows[0]['terms']['loss']:>9.5f} "
                     f"{sum(not math.isfinite(r['terms']['loss']) for r in rows):>4d}")
    return "\n".join(lines)


def format_phase_table(results: dict[str, list[dict]], data_s: float | None = None) -> str:
    """Median seconds of each phase per variant (and the cached data load, if measured)."""
    cols = (("data",) if data_s is not None else ()) + PHASES + ("total",)
    head = f"{'variant':<24} " + " ".join(f"{c:>9}" for c in cols)
    lines = [head, "-" * len(head)]
    for name, rows in results.items():
        vals = ([data_s] if data_s is not None else []) + [_median(rows, p) for p in PHASES]
        vals.append(sum(vals))
        lines.append(f"{name:<24} " + " ".join(f"{v:>9.3f}" for v in vals))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--size", type=positive_int, nargs=3, default=[128, 128, 48], help="patch X Y Z")
    p.add_argument("--down_size", type=positive_int, nargs=3, default=[64, 64, 48], help="mCRF size X Y Z")
    p.add_argument("--radius", type=positive_int, default=5, help="mCRF kernel radius")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed rounds (medians reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--threads", type=positive_int, default=2, help="torch CPU threads")
    p.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=sorted(VARIANTS))
    p.add_argument("--compile_backend", default="inductor", choices=COMPILE_BACKENDS,
                   help="torch.compile backend of the fast+compile variant")
    p.add_argument("--no_losses", dest="losses", action="store_false", help="skip the losses-alone table")
    p.add_argument("--data", action="store_true", help="also benchmark patch loading (needs torchio, SimpleITK)")
    p.add_argument("--data_subjects", type=positive_int, default=4, help="synthetic subjects for --data")
    p.add_argument("--data_repeats", type=positive_int, default=5, help="cached loads per subject for --data")
    return p


def _checked(args: argparse.Namespace) -> argparse.Namespace:
    """The arguments checked; variants this machine cannot run are left out with one line each."""
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    if any(d > s for d, s in zip(args.down_size, args.size)):
        raise ValueError(f"--down_size {args.down_size} must not exceed --size {args.size} in any axis")
    if any(s % 16 for s in args.size):
        raise ValueError(f"--size must be divisible by 16 in every axis, got {args.size}")
    if "fast+cpu_bf16_autocast" in args.variants and not cpu_native_bf16():
        print("fast+cpu_bf16_autocast skipped: this CPU has no native bf16 (AVX512-BF16/AMX), PyTorch would "
              "emulate it (~40x slower than float32)", flush=True)
        args.variants = [v for v in args.variants if v != "fast+cpu_bf16_autocast"]
    reason = compile_unavailable(torch.device("cpu"), args.compile_backend, training=True)
    if "fast+compile" in args.variants and reason:
        print(f"fast+compile skipped: {reason}", flush=True)
        args.variants = [v for v in args.variants if v != "fast+compile"]
    return args


def main(argv: list[str] | None = None) -> str:
    args = _checked(build_parser().parse_args(argv))
    torch.set_num_threads(args.threads)
    out: list[str] = []

    def emit(text: str) -> None:
        print(text, flush=True)
        out.append(text)

    emit(machine())
    emit(f"CPU, {args.threads} threads, torch {torch.__version__}; U_Net2D5 batch 1, patch "
         f"{'x'.join(map(str, args.size))}, mCRF at {'x'.join(map(str, args.down_size))} radius {args.radius}; "
         f"{args.repeats} timed rounds after {args.warmup} warm-up, round-robin over the variants")
    data = None
    if args.data:
        data = bench_data(args.size, args.data_subjects, args.data_repeats)
    batch = synthetic_batch(args.size)
    runners = [StepRunner(VARIANTS[name], batch, args.down_size, args.radius, backend=args.compile_backend)
               for name in args.variants]
    losses = None
    if args.losses:
        fast_runner = next((r for r in runners if r.variant.name == "fast"), runners[0])
        losses = LossBench(fast_runner.logits(), batch, args.down_size, args.radius)
    results = run_steps(runners, args.repeats, args.warmup, extra=losses.round if losses else None,
                        log=lambda s: print(s, flush=True))
    emit("\n[step] fwd+bwd+SGD, seconds (ratios of median step times measured in this run)")
    emit(format_step_table(results, "fast" if "fast" in results else args.variants[0],
                           "unfold" if "unfold" in results else args.variants[0]))
    emit("\n[phases] median seconds of each phase" + (" (data = cached patch load, measured below)" if data else ""))
    emit(format_phase_table(results, data["cached_median"] if data else None))
    if losses is not None:
        emit(_losses_table(losses, results))
    if data is not None:
        emit(_data_table(data, results, args))
    return "\n".join(out)


def _losses_table(losses: LossBench, results: dict[str, Any]) -> str:
    """Each loss alone, and how the 'fast' step's backward splits into losses and network."""
    summary = losses.summary()
    head = f"{'loss':<16} {'forward':>9} {'fwd+bwd':>9} {'backward':>9} {'peak MiB':>9}"
    lines = ["\n[losses] each loss alone on the initial model's logits (detached leaf), timed after each "
             "round of steps, median seconds", head + "\n" + "-" * len(head)]
    for name, d in summary.items():
        lines.append(f"{name:<16} {d['forward']:>9.3f} {d['fwd+bwd']:>9.3f} {d['fwd+bwd'] - d['forward']:>9.3f} "
                     f"{d['peak_mib']:>9.0f}")
    if "fast" in results:
        bwd = _median(results["fast"], "backward")
        loss_bwd = sum(summary[k]["fwd+bwd"] - summary[k]["forward"] for k in ("partial DiceCE", "mCRF fast", "VM"))
        lines.append(f"backward of the 'fast' step {bwd:.3f} s ≈ losses' backward {loss_bwd:.3f} s "
                     f"+ network backward {bwd - loss_bwd:.3f} s")
    return "\n".join(lines)


def _data_table(data: dict[str, Any], results: dict[str, Any], args: argparse.Namespace) -> str:
    """Patch loading against the step time."""
    step = _median(results["fast"], "total") if "fast" in results else _median(results[args.variants[0]], "total")
    head = f"{'load':<28} {'median s':>9} {'min s':>8} {'of a step':>10}"
    return "\n".join([
        f"\n[data] PatchDataset + collate, {args.data_subjects} synthetic subjects "
        f"{'x'.join(map(str, args.size))} (image float32 + seeds uint8, .nii.gz), "
        f"cache {data['cached_mib']:.0f} MiB",
        head + "\n" + "-" * len(head),
        f"{'first (decode+preprocess)':<28} {data['first_median']:>9.4f} {min(data['first']):>8.4f} "
        f"{100 * data['first_median'] / step:>9.1f}%",
        f"{'cached (later epochs)':<28} {data['cached_median']:>9.4f} {data['cached_min']:>8.4f} "
        f"{100 * data['cached_median'] / step:>9.1f}%",
        f"step ('fast' median) {step:.2f} s"])


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
