"""Running the network close to the hardware: ``torch.compile`` (``--compile``) and cuDNN
autotuning for the fixed patch size.

:func:`maybe_compile` compiles a module *in place* (``nn.Module.compile``): the module object, its
``state_dict`` keys (no ``_orig_mod.`` prefix), checkpoints, DDP wrapping and teacher reloads are
unchanged; only its forward runs through TorchDynamo and the chosen backend. Where the backend
cannot work on this machine (TorchInductor needs a C++ compiler on CPU and Triton on CUDA;
TorchDynamo needs a supported Python), it logs one WARNING line and leaves the module eager, so a
``--compile`` run never fails for want of a toolchain.

TorchInductor on CPU is used for inference only: in torch 2.13 (CPU build) its compiled backward
of U_Net2D5 returned zero gradients for most weights at 64×64×48 and 128×128×48 (correct at
32×32×16; the forward agrees to 2e-6), so a model in training mode on CPU is left eager, with
the warning; ``--compile_backend aot_eager`` still compiles it (correct gradients, no speed-up).
``benchmarks/bench_gpu.py`` checks the losses of the compiled path against the eager one on every
device (its ``loss rel diff`` column).
"""
from __future__ import annotations

import logging
import shutil

import torch
from torch import nn

__all__ = ["COMPILE_BACKENDS", "compile_unavailable", "maybe_compile", "tune_for_fixed_shapes", "prepare_network"]

logger = logging.getLogger("paseg")

#: ``inductor``: generated C++/OpenMP (CPU) or Triton (CUDA) kernels, the one that pays;
#: ``aot_eager``: the same graph capture and autograd tracing without code generation (seconds to
#: compile; for checking that a model compiles, not for speed); ``eager``: the graph capture alone,
#: the captured graph run by PyTorch as it is (a check of the capture in a second; no speed either);
#: ``cudagraphs``: CUDA graphs only.
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager", "cudagraphs")


def _cpp_compiler() -> str | None:
    """The C++ compiler TorchInductor would use on CPU, or None."""
    try:
        from torch._inductor import cpp_builder

        return cpp_builder.get_cpp_compiler()
    except Exception:  # private API or no compiler: fall back to a PATH search
        return shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


def compile_unavailable(device: torch.device, backend: str = "inductor", training: bool = False) -> str | None:
    """Why ``torch.compile(backend=backend)`` cannot run on ``device`` here (for a model that is
    ``training``, i.e. whose backward is compiled too), or None if it can."""
    if backend not in COMPILE_BACKENDS:
        raise ValueError(f"--compile_backend must be one of {', '.join(COMPILE_BACKENDS)}, got {backend!r}")
    if not hasattr(torch, "compile") or not torch._dynamo.is_dynamo_supported():
        return "torch.compile is not supported by this Python/torch build"
    if backend == "cudagraphs" and device.type != "cuda":
        return f"the cudagraphs backend needs a CUDA device, not {device}"
    if backend == "inductor" and device.type == "cpu" and _cpp_compiler() is None:
        return "TorchInductor needs a C++ compiler on CPU (g++ or $CXX) and none was found"
    if backend == "inductor" and device.type == "cpu" and training:
        return ("TorchInductor's CPU backward gave wrong (zero) weight gradients for these networks (measured at "
                f"64x64x48 and larger) in torch {torch.__version__.split('+')[0]}, so training on CPU is never "
                "compiled (--compile_backend aot_eager compiles without code generation)")
    if backend == "inductor" and device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return "TorchInductor needs Triton on CUDA and it is not installed"
    return None


def maybe_compile(model: nn.Module, enabled: bool, device: torch.device, backend: str = "inductor",
                  mode: str | None = None) -> nn.Module:
    """Compile ``model``'s forward in place when ``enabled`` (returns ``model`` itself).

    The first call of each input shape and mode (train/eval, grad/no-grad) compiles, which takes
    tens of seconds to minutes for a U-Net on CPU (once per process; TorchInductor caches kernels
    on disk between runs); later calls reuse the code. ``mode`` is passed to ``torch.compile``
    (e.g. ``"max-autotune-no-cudagraphs"``). When :func:`compile_unavailable` gives a reason
    (for a model in training mode: its backward too), logs ``--compile: <reason>; running the
    network uncompiled`` and returns the eager model.
    """
    if not enabled:
        return model
    reason = compile_unavailable(device, backend, training=model.training)
    if reason is not None:
        logger.warning("--compile: %s; running the network uncompiled", reason)
        return model
    model.compile(backend=backend, mode=mode)
    return model


def tune_for_fixed_shapes(device: torch.device) -> None:
    """On CUDA, let cuDNN benchmark its convolution algorithms once per shape and keep the fastest
    (``torch.backends.cudnn.benchmark``): training patches and sliding windows have one fixed
    size, so the search is paid once. A no-op on CPU (results there stay bit-identical)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def prepare_network(model: nn.Module, device: torch.device, compile: bool = False,
                    backend: str = "inductor") -> nn.Module:
    """What every script does to a network on its device before the first step:
    :func:`tune_for_fixed_shapes`, then :func:`maybe_compile` (``--compile``,
    ``--compile_backend``). Returns ``model`` itself."""
    tune_for_fixed_shapes(device)
    return maybe_compile(model, compile, device, backend)
