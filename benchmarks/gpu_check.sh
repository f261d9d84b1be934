#!/usr/bin/env bash
# GPU check of the stage-1 step, the SCM step and the mCRF loss, fp32 vs amp, then the CUDA tests.
# Needs only torch + numpy + pytest in $PYTHON (default python3). Output is also written to
# $OUT/gpu_check.txt when $OUT is set. Extra arguments go to benchmarks/gpu_check.py, e.g.
#   bash benchmarks/gpu_check.sh                        # on the GPU machine
#   PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh --device cpu --size 32 32 16 --down_size 16 16 16 --repeats 1 --warmup 0
set -u -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
LOG=${OUT:-/tmp}/gpu_check.txt
{
  echo "== environment"
  "$PY" -m pip list 2>/dev/null | grep -i -E "^(torch|monai|torchio|numpy|pytest) " || true
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
  echo "== benchmarks/gpu_check.py $*"
  "$PY" benchmarks/gpu_check.py "$@"
  echo "== CUDA tests (skipped without a GPU)"
  timeout 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_networks.py tests/test_crf.py -k cuda
} 2>&1 | tee "$LOG"
