"""The benchmarks run on tiny shapes on CPU (their numbers are measurements, not asserted; what is
asserted is that every row ran the library's step and the tables and projection add up)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch
from helpers import ROOT

from benchmarks import _common, bench_step


def _row(text: str, label: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(label + "  "))
    return line[len(label):].split()


def test_training_bench_step_is_the_trainers_step():
    """One step of the benchmark's stage-1 bench equals a hand-run Stage1Step + engine backward."""
    batch = _common.synthetic_batch((32, 32, 16), batch=2, seed=3)
    assert batch["image"].shape == (2, 1, 32, 32, 16) and set(batch["seeds"].unique().tolist()) == {0, 1, 2}
    bench = _common.stage1_bench(batch, torch.device("cpu"), (16, 16, 16), 5, seed=1)
    values = bench.step()
    assert values["ramp"] == 1.0                                     # CRF and VM at full weight
    assert values["loss"] == pytest.approx(values["loss_seg"] + values["loss_crf"] + 0.1 * values["loss_vm"],
                                           rel=1e-5)
    assert all(values[f"grad_{k}"] > 0 for k in ("seg", "crf", "vm"))
    second = bench.step()
    assert second["loss"] != values["loss"]                          # the optimiser stepped


def test_format_table_aligns_and_marks_missing():
    text = _common.format_table([{"a": "x", "b": 1.5}, {"a": "longer", "b": None}],
                                [("a", "name", ""), ("b", "value", ".2f")])
    lines = text.splitlines()
    assert lines[0] == "name    value" and set(lines[1]) == {"-"}
    assert lines[2] == "x        1.50" and lines[3] == "longer      -"
    assert re.fullmatch(r"-+", lines[1]) and len(lines[1]) == len(lines[0])


def _table(text: str, title: str) -> dict[str, list[str]]:
    """The rows of the plain-text table after the line starting with ``title``, by first cell."""
    lines = text.split(title, 1)[1].splitlines()[1:]
    start = next(i for i, line in enumerate(lines) if set(line) == {"-"}) + 1
    rows = {}
    for line in lines[start:]:
        if not line.strip():
            break
        cells = line.split()
        rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.slow
def test_bench_step_every_variant_through_the_trainers_train_step(monkeypatch, capsys):
    """Every variant of bench_step.py (and --data) runs, each step being one call of the engine's
    ``train_step``; the backward phase is timed and the phases add up to the step. On a CPU,
    fast+compile is skipped with TorchInductor's reason (its compiled path is bench_gpu's, tested
    above) and bf16 autocast where the CPU has no native bf16."""
    calls = []
    real = _common.train_step

    def counted(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(_common, "train_step", counted)
    variants = list(bench_step.VARIANTS)
    text = bench_step.main(["--size", "32", "32", "16", "--down_size", "16", "16", "16", "--repeats", "1", "--warmup",
                            "0", "--threads", "1", "--data", "--data_subjects", "1", "--data_repeats", "1",
                            "--variants", *variants])
    printed = capsys.readouterr().out
    skipped = {"fast+compile"} | (set() if _common.cpu_native_bf16() else {"fast+cpu_bf16_autocast"})
    assert all(f"{name} skipped: " in printed for name in skipped)
    ran = [v for v in variants if v not in skipped]
    steps, phases = _table(text, "[step]"), _table(text, "[phases]")
    assert list(steps) == ran and list(phases) == ran
    assert len(calls) == len(ran) and all(isinstance(c, bench_step._Timed) for c in calls)
    for name in ran:
        parts = dict(zip(("data",) + bench_step.PHASES, map(float, phases[name][:-1])))
        assert parts["backward"] > 0 and parts["rest"] > -2e-3      # backward measured apart from the rest
        assert sum(parts[p] for p in bench_step.PHASES) == pytest.approx(float(steps[name][0]), abs=0.02)
        assert steps[name][-1] == "0"                                # no non-finite loss
    loss = {name: float(steps[name][-2]) for name in ran}
    assert loss["unfold"] == pytest.approx(loss["fast"], rel=1e-5)  # the same step, the other mCRF
    assert loss["fast+1thread"] == pytest.approx(loss["fast"], rel=1e-5)
    assert "first (decode+preprocess)" in text and "cached (later epochs)" in text


@pytest.mark.slow
def test_gpu_check_smoke_runs_end_to_end_on_cpu(tmp_path):
    """GPU_CHECK_SMOKE=1: every step of the device script runs on CPU (nothing installed): the
    benchmark's rows, the mCRF benchmark, the CUDA tests collected; its log in $OUT. Its extra
    arguments reach bench_gpu.py: with ``--compile_backend eager`` (dynamo's graph capture alone; the
    trainers' compile with ``aot_eager`` is tests/utilities/core/test_compile.py) the compile rows
    run too, and every row's numbers and the projection add up."""
    compiles = hasattr(torch, "compile") and torch._dynamo.is_dynamo_supported()
    env = {**os.environ, "GPU_CHECK_SMOKE": "1", "PYTHON": sys.executable, "OUT": str(tmp_path),
           "OMP_NUM_THREADS": "1"}
    extra = ["--compile_backend", "eager"] if compiles else []
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), *extra], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (tmp_path / "gpu_check.txt").read_text(encoding="utf-8")
    assert log == done.stdout
    assert "== environment (GPU_CHECK_SMOKE: CPU smoke run)" in log and "== install" not in log
    for needle in ("stage-1 b1 current", "SCM b1 current", "[projection]", "16x16x16  fast-shifts",
                   "16x16x16    fast-rows", "tests/utilities/method/test_losses_mcrf.py::test_crf_cuda_matches_cpu"):
        assert needle in log, needle
    assert not re.search(r"Traceback|exited with|FAILED|Error", log), log[-3000:]
    for kind in ("stage-1", "SCM"):
        current = _row(log, f"{kind} b1 current")
        assert float(current[0]) > 0 and current[4] == "-"        # median ms; no ratio to itself
        # nothing picks bf16 autocast on a CPU
        assert "skipped: --amp (autocast) is CUDA-only" in " ".join(_row(log, f"{kind} b1 bf16 autocast (--amp)"))
        if compiles:
            compiled = _row(log, f"{kind} b1 compile")
            assert float(compiled[0]) > 0 and compiled[4].endswith("x")
            assert float(compiled[5]) <= 1e-4                            # same losses as the eager path
    proj = _row(log, "current path")
    step_ms, val_ms, epoch_s, total_min = map(float, proj[1:5])
    assert epoch_s == pytest.approx((176 * step_ms + 20 * val_ms) / 1e3, rel=1e-2)
    assert total_min == pytest.approx(epoch_s * 300 / 60, rel=1e-2)
    assert proj[5] in ("met", "not")
