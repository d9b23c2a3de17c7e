#!/usr/bin/env bash
# One whole GPU check on a machine without network: install the carried wheels (.whl, made by
# ../shared/device/wheelhouse.sh), print `kbench doctor`, run the tests marked gpu, then the
# verifier benchmark. Usage: bash bench/gpu_check.sh [tests|bench|all]
set -uo pipefail
what=${1:-all}
OUT=${OUT:-/tmp/kbench_out}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >/dev/null 2>&1 || { echo "wheel install failed"; exit 1; }
fi
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv
if [ "$what" = tests ] || [ "$what" = all ]; then
  python3 -m kbench.cli doctor
  python3 -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider ${PYTEST_K:+-k "$PYTEST_K"} 2>&1 | tee "$OUT/gpu_tests.log"
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  python3 bench/bench_verifier.py --out "$OUT/bench_verifier.json" 2>&1 | tee "$OUT/bench.log"
fi
