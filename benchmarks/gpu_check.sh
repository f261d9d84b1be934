#!/usr/bin/env bash
# GPU session in one script: install the project's requirements around the machine's own CUDA torch,
# then the training-step benchmark (benchmarks/bench_gpu.py: fp32/TF32, bf16, compile, channels-last,
# batch 1 and 2, stage 1 and SCM, the projected full VS stage 1), the mCRF benchmark on CUDA and the
# CUDA tests. Output also goes to $OUT/gpu_check.txt when $OUT is set. Extra arguments go to
# bench_gpu.py (commands: BENCHMARKS.md, section "GPU").
#
# GPU_CHECK_SMOKE=1 runs every step end to end on the CPU at a smoke size, with the interpreter of
# $PYTHON and nothing installed: bench_gpu.py --device cpu --quick at batch 1 with one timed step, the
# mCRF benchmark on 16x16x16 in one process, and the CUDA tests collected but not run
# (tests/benchmarks/test_benchmarks.py does this).
set -u -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
LOG=${OUT:-/tmp}/gpu_check.txt
SMOKE=${GPU_CHECK_SMOKE:-}
if [ -n "$SMOKE" ]; then
  SKIP_INSTALL=1
  GPU_ARGS=(--device cpu --quick --batches 1 --repeats 1)
  CRF_ARGS=(--device cpu --repeats 1 --warmup 0 --sizes 16x16x16 --full_sizes 16x16x16 --in_process)
  TEST_ARGS=(--collect-only)
else
  GPU_ARGS=()
  CRF_ARGS=(--device auto --repeats 10 --warmup 2 --sizes 64x64x48 --full_sizes 128x128x48)
  TEST_ARGS=()
fi
{
  echo "== environment${SMOKE:+ (GPU_CHECK_SMOKE: CPU smoke run)}"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
  if [ -z "${SKIP_INSTALL:-}" ]; then
    echo "== install (requirements.txt without torch, which stays the machine's CUDA build, and GeodisTK)"
    grep -v -E '^(torch|GeodisTK)==' requirements.txt > /tmp/paseg_requirements_gpu.txt
    "$PY" -m pip install --quiet -r /tmp/paseg_requirements_gpu.txt 2>&1 | tail -3
    "$PY" -m pip install --quiet --no-deps --no-build-isolation -e . 2>&1 | tail -3
  fi
  "$PY" -m pip list 2>/dev/null | grep -i -E "^(torch|triton|monai|torchio|numpy|pytest) " || true
  echo "== benchmarks/bench_gpu.py ${GPU_ARGS[*]} $*"
  timeout 450 "$PY" benchmarks/bench_gpu.py --budget_s 330 ${GPU_ARGS[@]+"${GPU_ARGS[@]}"} "$@" \
    || echo "bench_gpu.py exited with $? (124: timed out)"
  echo "== benchmarks/bench_crf.py ${CRF_ARGS[*]}"
  timeout 60 "$PY" benchmarks/bench_crf.py ${CRF_ARGS[@]+"${CRF_ARGS[@]}"} --implementations shifts rows --no_check \
    || echo "bench_crf.py exited with $? (124: timed out)"
  echo "== CUDA tests (skipped without a GPU)"
  timeout 120 "$PY" -m pytest -q -p no:cacheprovider tests/networks/test_networks.py tests/utilities/method/test_losses_mcrf.py \
    tests/utilities/core/test_compile.py \
    -k cuda ${TEST_ARGS[@]+"${TEST_ARGS[@]}"}
} 2>&1 | tee "$LOG"
