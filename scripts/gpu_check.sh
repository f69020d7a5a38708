#!/usr/bin/env bash
# Everything that needs a GPU, in one go, for a machine lent for a few minutes: the GPU tests,
# the benchmark, and a short training run on "cuda" against the same run on the CPU in float32.
# Usage: scripts/gpu_check.sh [OUT_DIR]   (logs and JSON land in OUT_DIR, default gpu-check/)
# Uses the Python that has CuPy (PYTHON=..., default python3); installs chainrule from this
# checkout into it without dependencies, so the machine's CuPy/PyTorch/JAX stay as they are.
set -u
out="${1:-gpu-check}"
py="${PYTHON:-python3}"
mkdir -p "$out"
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
  "$py" -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)" 2>&1
} | tee "$out/machine.txt"
"$py" -m pip install --quiet --no-deps -e . 2>&1 | tail -2
"$py" -m pip install --quiet pytest hypothesis 2>&1 | tail -2
echo "== GPU tests" | tee "$out/tests.txt"
timeout 240 "$py" -m pytest -q -x -p no:cacheprovider tests/backend/test_device.py \
  tests/backend/test_cuda_cublas.py tests/backend/test_cuda_graph.py tests/backend/test_precision.py \
  2>&1 | tail -40 | tee -a "$out/tests.txt"
echo "== benchmark" | tee "$out/bench.txt"
timeout 240 "$py" benchmarks/bench_gpu.py 2>&1 | tee -a "$out/bench.txt"
echo "== training on cuda and on cpu (float32)" | tee "$out/train.txt"
for where in cuda cpu; do
  timeout 60 "$py" -m chainrule.apps.cli train --data digits --hidden 128,64 --epochs 3 --device "$where" \
    --dtype float32 --run-dir "$out/run-$where" --no-plot 2>&1 | tail -6 | tee -a "$out/train.txt"
done
