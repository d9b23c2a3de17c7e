#!/usr/bin/env bash
# One GPU session's checks, started in the background so that it outlives one device call:
#   bash bench/gpu_session.sh start [KB_DIR]   # install wheels, start the jobs (setsid)
#   bash bench/gpu_session.sh wait [SECONDS]   # poll until done or SECONDS, copy logs to $OUT
# First a smoke check of the default sandbox backend (bench/smoke_backend.py). Jobs, in order:
# `kbench doctor`; bench/kernelbench_verdicts.py (correctness only: KernelBench's adversarial
# kernels, kbench's KernelBench cheats and honest candidates) beside bench/acceptance.py (the
# honest-styles corpus and the attack corpus on the GPU); then the gpu-marked tests (tests/test_gpu.py, tests/test_provenance.py). Logs in /tmp/kbench_gpu.
set -uo pipefail
cmd=${1:-start}
LOG=/tmp/kbench_gpu
OUT=${OUT:-/tmp/kbench_out}
mkdir -p "$LOG" "$OUT"
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
if [ "$cmd" = start ]; then
  kb=${2:-.kb}
  if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl >/dev/null 2>&1 || { echo "wheel install failed"; exit 1; }
  fi
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$LOG/device.txt"
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)" | tee -a "$LOG/device.txt"
  git rev-parse --short HEAD 2>/dev/null | tee -a "$LOG/device.txt"
  # The default sandbox backend (the fork server) on this GPU, once: if it cannot verify an
  # honest example, everything after runs in the plain subprocess backend and says so.
  if ! timeout 300 python3 bench/smoke_backend.py > "$LOG/smoke.log" 2>&1; then
    echo "fork server smoke check FAILED; falling back to subprocess" | tee -a "$LOG/device.txt"
    export KBENCH_SANDBOX_BACKEND=subprocess
  fi
  tail -3 "$LOG/smoke.log"
  setsid bash -c "
    python3 -m kbench.cli doctor > $LOG/doctor.log 2>&1
    python3 bench/kernelbench_verdicts.py --kernelbench $kb --device cuda --no-timing \
      --out $LOG/verdicts.json --markdown $LOG/verdicts.md > $LOG/verdicts.log 2>&1 &
    python3 bench/acceptance.py --device cuda --jobs 6 --json $LOG/acceptance.json \
      --markdown $LOG/acceptance.md > $LOG/acceptance.log 2>&1
    echo \$? > $LOG/acceptance.rc
    wait
    python3 -m pytest -q -m gpu tests/test_gpu.py tests/test_provenance.py -p no:cacheprovider > $LOG/gpu_tests.log 2>&1
    echo \$? > $LOG/gpu_tests.rc
    touch $LOG/finished
  " > /dev/null 2>&1 < /dev/null &
  echo started
  exit 0
fi
limit=${2:-540}
t=0
while [ ! -f "$LOG/finished" ] && [ "$t" -lt "$limit" ]; do sleep 10; t=$((t + 10)); done
cp "$LOG"/* "$OUT"/ 2>/dev/null || true
echo "--- finished: $([ -f "$LOG/finished" ] && echo yes || echo no) after ${t}s"
tail -5 "$LOG/gpu_tests.log" 2>/dev/null
tail -30 "$LOG/verdicts.log" 2>/dev/null
tail -8 "$LOG/acceptance.log" 2>/dev/null
