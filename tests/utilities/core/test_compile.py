"""``--compile`` (utilities/core/compile.py) on CPU: same losses as the eager path, checkpoints unchanged,
one-line fallback where the toolchain is missing; and nothing ever picks bf16 autocast on a CPU."""
from __future__ import annotations

import logging
import os

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import SCM, STAGE1, inference_args, load_script, pretrained, scm_args, stage1_args, weights
from synth import make_vs_dataset

from networks import get_network
from utilities.core import compile as compile_mod
from utilities.core.compile import compile_unavailable, maybe_compile, prepare_network
from utilities.method.optim import Amp

LOSSES = ["loss", "loss_seg", "loss_crf", "loss_vm"]
NO_DYNAMO = not hasattr(torch, "compile") or not torch._dynamo.is_dynamo_supported()
needs_dynamo = pytest.mark.skipif(NO_DYNAMO, reason="torch.compile is not supported by this Python/torch build")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_vs_dataset(tmp_path_factory.mktemp("compile"), n_train=2, n_val=1, n_inf=1)


def _stage1(data, out, *extra: str):
    stage1 = load_script(STAGE1)
    run_dir = stage1.main(stage1_args(data, out, "--max_epochs", "1", *extra))
    return pd.read_csv(run_dir / "log.csv"), run_dir


def _same_run(data, tmp_path, backend: str) -> None:
    eager, eager_dir = _stage1(data, tmp_path / "eager")
    compiled, compiled_dir = _stage1(data, tmp_path / backend, "--compile", "--compile_backend", backend)
    np.testing.assert_allclose(compiled[LOSSES].to_numpy(), eager[LOSSES].to_numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(compiled["val_dice"].to_numpy(), eager["val_dice"].to_numpy(), atol=1e-4)
    a = weights(eager_dir / "models" / "CP_final.pth")
    b = weights(compiled_dir / "models" / "CP_final.pth")
    assert a.keys() == b.keys()  # compiled in place: no "_orig_mod." prefix in the checkpoint
    for key in a:  # the compiled graph sums in another order: after an epoch of SGD with momentum 0.99 single
        # weights differ by up to ~4e-5 on some CPUs' kernels (AVX-512; ~1e-5 on others), whatever their scale
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4)


@needs_dynamo
@pytest.mark.slow
def test_stage1_compiled_aot_eager_same_losses_and_checkpoint(data, tmp_path):
    """The whole --compile path (graph capture of the network, compiled autograd through the
    engine's per-term backward, recompilation for validation) without code generation."""
    _same_run(data, tmp_path, "aot_eager")


@needs_dynamo
@pytest.mark.slow
def test_stage1_compile_inductor_cpu_falls_back_or_matches(data, tmp_path, capfd):
    """``--compile`` (TorchInductor) on CPU: where training is not compiled (torch 2.13, see
    utilities/core/compile.py) one warning line and the eager run; elsewhere the same losses."""
    reason = compile_unavailable(torch.device("cpu"), "inductor", training=True)
    if reason is not None:
        _stage1(data, tmp_path / "fallback", "--compile")
        out = capfd.readouterr()
        lines = [line for line in (out.out + out.err).splitlines() if "--compile: " in line]
        assert len(lines) == 1 and lines[0].endswith(f"--compile: {reason}; running the network uncompiled")
        return
    if not os.environ.get("PASEG_SLOW_TESTS"):
        pytest.skip("TorchInductor compiles C++ kernels for 1-2 min on a cold cache; set PASEG_SLOW_TESTS=1")
    _same_run(data, tmp_path, "inductor")


@needs_dynamo
@pytest.mark.slow
def test_scm_compiled_aot_eager_same_losses(data, tmp_path):
    """SCM with --compile: both students and both frozen teachers compiled, teachers reloaded."""
    pre = pretrained(tmp_path)
    scm = load_script(SCM)
    cols = ["loss1", "self1", "kd1", "loss2", "self2", "kd2"]
    runs = []
    for name, extra in (("eager", ()), ("compiled", ("--compile", "--compile_backend", "aot_eager"))):
        out = scm.main(scm_args(data, pre, tmp_path / name, "--max_epochs", "1", *extra))
        runs.append(pd.read_csv(out / "U_Net2D5" / "log_SCM.csv")[cols].to_numpy())
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-4, atol=1e-6)


@needs_dynamo
@pytest.mark.slow
def test_inference_compiled_same_segmentation(data, tmp_path):
    torch.manual_seed(0)
    from utilities.models.checkpoints import save_model

    save_model(tmp_path / "U_Net2D5" / "models" / "CP_best.pth", get_network("U_Net2D5", 1, 2), "U_Net2D5")
    inference = load_script("inference.py")
    eager = inference.main(inference_args(data, tmp_path))
    eager_seg = [np.asarray(nib.load(p).dataobj).copy() for p in eager]
    compiled = inference.main(inference_args(data, tmp_path, "--compile", "--compile_backend", "aot_eager"))
    assert [p.name for p in compiled] == [p.name for p in eager]
    for seg, path in zip(eager_seg, compiled):
        np.testing.assert_array_equal(np.asarray(nib.load(path).dataobj), seg)


def test_missing_cpp_compiler_falls_back_with_one_warning_line(monkeypatch, caplog):
    monkeypatch.setattr(compile_mod, "_cpp_compiler", lambda: None)
    model = get_network("U_Net2D5", 1, 2)
    with caplog.at_level(logging.WARNING, logger="paseg"):
        out = maybe_compile(model, True, torch.device("cpu"), "inductor")
    assert out is model and model._compiled_call_impl is None  # eager
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if NO_DYNAMO:
        assert warnings == ["--compile: torch.compile is not supported by this Python/torch build; running the "
                            "network uncompiled"]
    else:
        assert warnings == ["--compile: TorchInductor needs a C++ compiler on CPU (g++ or $CXX) and none was "
                            "found; running the network uncompiled"]


@pytest.mark.parametrize("backend, reason", [
    ("cudagraphs", "the cudagraphs backend needs a CUDA device, not cpu"),
    ("aot_eager", None),
])
def test_compile_unavailable_reasons(backend, reason):
    if NO_DYNAMO:
        pytest.skip("torch.compile is not supported by this Python/torch build")
    assert compile_unavailable(torch.device("cpu"), backend) == reason


def test_inductor_on_cpu_compiles_inference_but_not_training(monkeypatch):
    """TorchInductor's CPU backward gave zero weight gradients at 64x64x48 (torch 2.13): a model
    in training mode stays eager on CPU; one in eval mode (inference, teachers) is compiled."""
    if NO_DYNAMO:
        pytest.skip("torch.compile is not supported by this Python/torch build")
    monkeypatch.setattr(compile_mod, "_cpp_compiler", lambda: "g++")
    cpu = torch.device("cpu")
    assert compile_unavailable(cpu, "inductor", training=False) is None
    reason = compile_unavailable(cpu, "inductor", training=True)
    assert reason.startswith("TorchInductor's CPU backward gave wrong (zero) weight gradients")
    assert compile_unavailable(cpu, "aot_eager", training=True) is None
    student = get_network("U_Net2D5", 1, 2)
    assert maybe_compile(student, True, cpu)._compiled_call_impl is None
    teacher = get_network("U_Net2D5", 1, 2).eval()
    assert maybe_compile(teacher, True, cpu)._compiled_call_impl is not None


def test_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError,
                       match="--compile_backend must be one of inductor, aot_eager, eager, cudagraphs, got 'tvm'"):
        compile_unavailable(torch.device("cpu"), "tvm")


def test_disabled_compile_and_cpu_leave_the_model_and_cudnn_alone():
    model = get_network("U_Net2D5", 1, 2)
    before = torch.backends.cudnn.benchmark
    assert prepare_network(model, torch.device("cpu"), compile=False) is model
    assert model._compiled_call_impl is None
    assert torch.backends.cudnn.benchmark == before


@pytest.mark.parametrize("script", [STAGE1, "train_SCM.py", "inference.py"])
def test_every_script_has_the_compile_flags(script):
    args = load_script(script).build_parser().parse_args(["--compile", "--compile_backend", "aot_eager"])
    assert args.compile is True and args.compile_backend == "aot_eager"
    assert load_script(script).build_parser().parse_args([]).compile is False


def test_amp_never_autocasts_on_cpu(caplog):
    """bf16 autocast on a CPU without native bf16 is emulated (~110 s a stage-1 step on AVX2)."""
    with caplog.at_level(logging.WARNING, logger="paseg"):
        amp = Amp(True, torch.device("cpu"))
    assert not amp.enabled
    assert "--amp is only used on CUDA devices" in caplog.text
    conv = torch.nn.Conv3d(1, 2, 3, padding=1)
    with amp.autocast():
        assert not torch.is_autocast_enabled("cpu")
        out = conv(torch.randn(1, 1, 4, 4, 4))
    assert out.dtype == torch.float32


@needs_dynamo
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_stage1_compiled_cuda_same_losses(data, tmp_path):
    """On CUDA with TorchInductor (Triton) or its one-line fallback. rtol 1e-3, not 1e-4: the
    convolutions run in TF32 and cudnn.benchmark may pick other algorithms in the two runs."""
    eager, _ = _stage1(data, tmp_path / "eager", "--device", "cuda")
    compiled, _ = _stage1(data, tmp_path / "compiled", "--device", "cuda", "--compile")
    np.testing.assert_allclose(compiled[LOSSES].to_numpy(), eager[LOSSES].to_numpy(), rtol=1e-3, atol=1e-5)
