"""What the benchmarks share: synthetic batches, the library's training steps run the way
:func:`utilities.training.engine.fit` runs them, timing, peak memory and plain-text tables.

A training step here is the engine's, :func:`utilities.training.engine.train_step`: ``zero_grad``, the
trainer's step object (:class:`Stage1Step` of the stage-1 script, :class:`SCMStep` of
``train_SCM.py``), the ``float()`` and finiteness check of every logged value, each weighted term
differentiated with respect to its logits, one backward pass through the network and
:meth:`utilities.method.optim.Amp.step`, with the optimiser of :func:`utilities.method.optim.make_optimizer`.
Nothing of the step is re-implemented, so a benchmark measures the code a training run executes.
"""
from __future__ import annotations

import contextlib
import copy
import gc
import os
import resource
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import train_gatedcrfloss3d22d_multiview_varianceloss as stage1_script
import train_SCM as scm_script
from networks import get_network
from utilities.core.compile import maybe_compile
from utilities.method.optim import Amp, make_optimizer
from utilities.models.checkpoints import ResumeRecord, TrainingState
from utilities.training.engine import StepInfo, train_step

__all__ = ["synthetic_batch", "sync", "peak_tracker", "time_fn", "round_robin", "cpu_native_bf16", "Report",
           "format_table", "stage1_args", "TrainingBench", "stage1_bench", "scm_bench", "LEARNING_RATE", "machine"]

LEARNING_RATE = 1e-2  # the paper's initial learning rate (both trainers' default)


def synthetic_batch(size: Sequence[int], batch: int = 1, seed: int = 0,
                    device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """A smooth z-scored image ``(N, 1, X, Y, Z)`` with a bright blob, and expanded seeds
    ``(N, 1, X, Y, Z)`` in {0 background, 1 foreground, 2 unknown}; item k from ``seed + k``."""
    x, y, z = size
    blob = (slice(x // 2 - x // 8, x // 2 + x // 8), slice(y // 2 - y // 8, y // 2 + y // 8),
            slice(z // 2 - z // 4, z // 2 + z // 4))
    images, seeds = [], []
    for k in range(batch):
        gen = torch.Generator().manual_seed(seed + k)
        image = F.avg_pool3d(torch.randn(1, 1, x, y, z, generator=gen), 5, stride=1, padding=2)
        image[(0, 0) + blob] += 1.0
        images.append((image - image.mean()) / image.std())
        s = torch.full((1, 1, x, y, z), 2, dtype=torch.int64)
        s[..., : x // 8, :, :] = 0
        s[(0, 0) + blob] = 1
        seeds.append(s)
    return {"image": torch.cat(images).to(device), "seeds": torch.cat(seeds).to(device)}


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_kib(name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {name} line")


@contextlib.contextmanager
def peak_tracker(device: torch.device | str = "cpu") -> Iterator[dict[str, float]]:
    """Yields a dict that gets ``peak_mib`` on exit: on CUDA the growth of
    ``torch.cuda.max_memory_allocated`` over the memory allocated at entry; on CPU the growth of
    the peak resident set (VmHWM, reset through ``/proc/self/clear_refs``) over the resident set
    at entry, or, where VmHWM cannot be reset, of ``ru_maxrss`` (an upper bound); NaN off Linux."""
    device = torch.device(device)
    out: dict[str, float] = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield out
        out["peak_mib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        return
    try:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            reset = True
        except OSError:
            reset = False
        base = _status_kib("VmRSS")
    except OSError:
        yield out
        out["peak_mib"] = float("nan")
        return
    yield out
    peak = _status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["peak_mib"] = (peak - base) / 1024


def time_fn(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> dict[str, Any]:
    """``warmup`` untimed then ``repeats`` timed calls of ``fn`` (device synchronised around
    each); returns ``median_s``, ``min_s``, ``times`` and ``peak_mib`` (over all calls) and
    ``results`` (what each timed call returned)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    times, results = [], []
    with peak_tracker(device) as peak:
        for _ in range(warmup):
            fn()
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            results.append(fn())
            sync(device)
            times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "times": times,
            "peak_mib": peak["peak_mib"], "results": results}


def round_robin(fns: Mapping[str, Callable[[], Any]], repeats: int, warmup: int,
                log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Run one call of every function per round (so a shared machine's load falls on all alike);
    per name: ``times``, ``results`` and ``peaks`` of the timed rounds, ``median_s``, ``min_s``
    and ``peak_mib`` (median of the rounds' CPU peaks)."""
    rows: dict[str, dict[str, list]] = {k: {"times": [], "results": [], "peaks": []} for k in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            with peak_tracker("cpu") as peak:
                t0 = time.perf_counter()
                result = fn()
                dt = time.perf_counter() - t0
            if round_ >= warmup:
                rows[name]["times"].append(dt)
                rows[name]["results"].append(result)
                rows[name]["peaks"].append(peak["peak_mib"])
        timed = round_ >= warmup
        log(f"round {round_ + 1}/{warmup + repeats} ({'timed' if timed else 'warm-up'})"
            + (": " + ", ".join(f"{k} {v['times'][-1]:.2f}s" for k, v in rows.items()) if timed else ""))
    return {k: {**v, "median_s": statistics.median(v["times"]), "min_s": min(v["times"]),
                "peak_mib": statistics.median(v["peaks"])} for k, v in rows.items()}


def _cpuinfo(key: str) -> str:
    """The first ``key`` line of /proc/cpuinfo ("" where there is none, or no /proc)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.split(":", 1)[0].strip() == key), "")
    except OSError:
        return ""


def cpu_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere PyTorch emulates
    it, ~40x slower than float32 (110 s for one stage-1 step on a 2-core AVX2 machine)."""
    flags = _cpuinfo("flags").split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


#: The CPU flags that decide the speed of the CPU benchmarks, as BENCHMARKS.md names them.
SIMD_FLAGS = (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX-BF16"))


def machine() -> str:
    """This machine in one line, for the head of a benchmark's output: the CPU model (and its
    family and model numbers: a virtual machine may name only the vendor's line), the logical
    CPUs, which of AVX2, AVX-512, AVX512-BF16 and AMX-BF16 it has, the torch build."""
    flags = set(_cpuinfo("flags").split())
    simd = [label for flag, label in SIMD_FLAGS if flag in flags]
    family = f" (family {_cpuinfo('cpu family')}, model {_cpuinfo('model')})" if _cpuinfo("cpu family") else ""
    return (f"machine: {_cpuinfo('model name') or 'CPU model unknown'}{family}, {os.cpu_count()} logical CPUs, "
            f"{', '.join(simd) if simd else 'no AVX2'}; torch {torch.__version__}")


@dataclass
class Report:
    """Lines printed as they come and kept for the returned text."""

    lines: list[str] = field(default_factory=list)

    def __call__(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(text)

    def text(self) -> str:
        return "\n".join(self.lines)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """Plain-text table: ``columns`` are ``(key, header, format)``, e.g. ``("median_s", "median s",
    ".4f")``; a missing or ``None`` value prints ``-``, a string as is. The first column and the
    columns without a header (notes) are left-aligned, the others right-aligned."""
    widths = []
    cells = []
    for row in rows:
        line = []
        for key, _, fmt in columns:
            value = row.get(key)
            line.append("-" if value is None else value if isinstance(value, str) else format(value, fmt))
        cells.append(line)
    for i, (_, header, _) in enumerate(columns):
        widths.append(max([len(header)] + [len(c[i]) for c in cells]))
    left = [i == 0 or not header for i, (_, header, _) in enumerate(columns)]  # names and notes

    def join(texts: Sequence[str]) -> str:
        return "  ".join(s.ljust(w) if lft else s.rjust(w) for s, w, lft in zip(texts, widths, left)).rstrip()

    head = join([h for _, h, _ in columns])
    return "\n".join([head, "-" * len(head)] + [join(line) for line in cells])


def stage1_args(down_size: Sequence[int], radius: int, *extra: str) -> Any:
    """The stage-1 script's arguments (its defaults: weights 1 and 0.1, σ_xy 6, σ_rgb 0.1) with
    ``--rampup_epochs 0``: the CRF and VM terms at full weight from the first step."""
    return stage1_script.build_parser().parse_args(
        ["--down_size", *map(str, down_size), "--kernel_radius", str(radius), "-1", "-1", "--rampup_epochs", "0",
         *extra])


class TrainingBench:
    """A training state and a step object; :meth:`step` is one step of the engine's loop."""

    def __init__(self, state: TrainingState, step_fn: Callable[[Mapping[str, Any], StepInfo], Any],
                 batch: Mapping[str, torch.Tensor]) -> None:
        self.state, self.step_fn, self.batch = state, step_fn, batch
        self.count = 0

    def step(self) -> dict[str, float]:
        """One step on the fixed batch; returns the logged values (losses, gradient norms)."""
        values = train_step(self.state, self.step_fn, self.batch, StepInfo(0, self.count, self.count, 1))
        self.count += 1
        return values


def _network(name: str, device: torch.device, seed: int, channels_last: bool) -> nn.Module:
    torch.manual_seed(seed)
    model = get_network(name, 1, 2).to(device)
    return model.to(memory_format=torch.channels_last_3d) if channels_last else model


def _layout(batch: Mapping[str, torch.Tensor], channels_last: bool) -> dict[str, torch.Tensor]:
    if not channels_last:
        return dict(batch)
    return {k: v.contiguous(memory_format=torch.channels_last_3d) if v.dim() == 5 else v for k, v in batch.items()}


def stage1_bench(batch: Mapping[str, torch.Tensor], device: torch.device, down_size: Sequence[int], radius: int,
                 amp: bool = False, channels_last: bool = False, compile: bool = False, backend: str = "inductor",
                 mode: str | None = None, network: str = "U_Net2D5", seed: int = 0) -> TrainingBench:
    """The stage-1 step of the training script (ramp 1) on ``batch``, with a fresh ``network``
    from ``seed``, compiled in place (``compile``) as ``--compile`` does."""
    model = _network(network, device, seed, channels_last)
    amp_ = Amp(amp, device)
    state = TrainingState({"model": model}, {"optimizer": make_optimizer(model, LEARNING_RATE)}, amp_,
                          {"network": network}, ResumeRecord({}))
    maybe_compile(model, compile, device, backend, mode)
    step = stage1_script.Stage1Step(model, amp_, device,
                                    stage1_script.Stage1Losses.from_args(stage1_args(down_size, radius)))
    return TrainingBench(state, step, _layout(batch, channels_last))


def scm_bench(batch: Mapping[str, torch.Tensor], device: torch.device, amp: bool = False,
              channels_last: bool = False, compile: bool = False, backend: str = "inductor",
              mode: str | None = None, networks: Sequence[str] = ("U_Net2D5", "AttU_Net"), seed: int = 0,
              weight_kd: float = 0.5, T: float = 4.0) -> TrainingBench:
    """The SCM step of ``train_SCM.py``: two students (the paper's U_Net2D5 and AttU_Net by
    default) and their frozen copies as teachers, all compiled with ``compile``."""
    students = {k: _network(networks[k - 1], device, seed + k, channels_last) for k in (1, 2)}
    teachers = {k: scm_script.freeze(copy.deepcopy(students[k])) for k in (1, 2)}
    amp_ = Amp(amp, device)
    state = TrainingState({f"model{k}": students[k] for k in (1, 2)},
                          {f"optimizer{k}": make_optimizer(students[k], LEARNING_RATE) for k in (1, 2)}, amp_,
                          {f"network{k}": networks[k - 1] for k in (1, 2)}, ResumeRecord({}),
                          extras={f"teacher{k}": teachers[k] for k in (1, 2)})
    for model in (*students.values(), *teachers.values()):
        maybe_compile(model, compile, device, backend, mode)
    step = scm_script.SCMStep(students, teachers, amp_, device, weight_kd, T)
    return TrainingBench(state, step, _layout(batch, channels_last))
