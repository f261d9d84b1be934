"""The benchmarks run on tiny shapes on CPU (their numbers are measurements, not asserted; what is
asserted is that every row ran the library's step and the tables and projection add up)."""
from __future__ import annotations

import re

import pytest
import torch

from benchmarks import _common, bench_gpu


def _row(text: str, label: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(label + "  "))
    return line[len(label):].split()


def test_bench_gpu_quick_on_cpu():
    if not hasattr(torch, "compile") or not torch._dynamo.is_dynamo_supported():
        pytest.skip("torch.compile is not supported by this Python/torch build")
    text = bench_gpu.main(["--device", "cpu", "--quick", "--compile_backend", "aot_eager", "--batches", "1",
                           "--only", "compile", "bf16 autocast (--amp)"])
    assert "FAILED" not in text
    for kind in ("stage-1", "SCM"):
        current = _row(text, f"{kind} b1 current")
        assert float(current[0]) > 0 and current[4] == "-"        # median ms; no ratio to itself
        compiled = _row(text, f"{kind} b1 compile")
        assert float(compiled[0]) > 0 and compiled[4].endswith("x")
        assert float(compiled[5]) <= 1e-4                            # same losses as the eager path
        # nothing picks bf16 autocast on a CPU
        assert "skipped: --amp (autocast) is CUDA-only" in " ".join(_row(text, f"{kind} b1 bf16 autocast (--amp)"))
    proj = _row(text, "current path")
    step_ms, val_ms, epoch_s, total_min = map(float, proj[1:5])
    assert epoch_s == pytest.approx((176 * step_ms + 20 * val_ms) / 1e3, rel=1e-2)
    assert total_min == pytest.approx(epoch_s * 300 / 60, rel=1e-2)
    assert proj[5] in ("met", "not")


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
