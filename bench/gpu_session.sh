#!/usr/bin/env bash
# One GPU session's checks, started in the background so that it outlives one device call:
#   bash bench/gpu_session.sh start [KB_DIR] [STEPS]   # install wheels, start the jobs (setsid)
#     STEPS: comma-separated, run in the order given, from: verdicts,acceptance,tests,pipeline,
#     evolve,examples,export,selection,confirm,crosscheck,tune,load,throughput,throughput_ray,firstcall,
#     vprofile,overlap,evalprofile,compare,serverstart,placement,selftest,eval (export needs evolve's run, or examples' with EXPORT_RUN=examples; throughput_ray needs .ray/, see its step)
#     (default verdicts,acceptance,tests); VERDICTS_K=a,b filters the verdict rows,
#     OLD_TREE=DIR gives bench_pipeline.py an older checkout to compare with, STEP_LIMIT_S caps
#     each step (default 900; STEP:SECONDS in STEPS sets one step's), TUNE_TRIALS the trials per
#     example of the tune step (default 20; TUNE_GRID=0 skips its Optuna-vs-grid part),
#     CONFIRM_PROBLEMS=a,b the confirm step's problems (default the eight examples), EVOLVE_GENERATIONS the evolve demo (default 3), PIPELINE_ONLY the
#     pipeline bench's measurements (its --only; OLD_PROBLEMS and OLD_ONLY: its --old-problems
#     and --old-only), GPU_TESTS the tests step's pytest ids, GPU_TEST_WORKERS its xdist workers (default 2), CROSSCHECK_ARGS more arguments of the crosscheck step, EVOLVE_DB the store the export step reads
#     (default: this session's evolve or examples step's), EXPORT_RUN the run it exports (default evolve-demo), EXAMPLES_PROBLEMS the examples step's problems (default the eight), EXPORT_TESTS=0 / EXPORT_PROFILE=0 skip the exported
#     package's own tests / bench/export_profile.py (bench.py alone), EXPORT_BENCH_ARGS its
#     bench.py's arguments (e.g. --ops quant_w8a8_dynamic), EXPORT_BENCH_ARGS2 a second
#     bench.py run's (e.g. --ops kvcache_kv_int8_quant --batch 20), EXPORT_GAP an op whose
#     device time bench/export_gap.py then takes apart (e.g. kvcache_kv_int8_quant), EVAL_ARGS the eval step's
#     kbench eval arguments (--problem P --candidate FILE), THROUGHPUT_ARGS more arguments of both
#     throughput steps (e.g. --warm-jobs 3)
#   bash bench/gpu_session.sh wait [SECONDS]   # poll until done or SECONDS; logs to $OUT as
#     one archive, kbench_gpu.tgz (a device call brings back at most 8 files)
#   DRY_RUN=1 bash bench/gpu_session.sh start ...   # print the job script, start nothing
# The jobs run from a private copy of the tree in /tmp/kbench_tree, so the next device call
# (which replaces the carried tree) cannot pull the working directory from under them; call
# `wait` within the 30 s a machine stays warm. First a smoke check of the default sandbox
# backend (bench/smoke_backend.py): if it gets a wrong verdict, the steps run in the plain
# subprocess backend. Preparing the carried tree here (all git-ignored, under 64 MiB):
#   git archive HEAD | (rm -rf .gpu; mkdir .gpu; tar -x -C .gpu); ln -sfn ../.whl .gpu/.whl
#   ln -sfn ../.ray .gpu/.ray    # throughput_ray only
# and the call: cd .gpu && OLD_TREE=../.old bash bench/gpu_session.sh start ../.kb STEPS &&
# bash bench/gpu_session.sh wait 470, with carry [".whl", ".kb", ".gpu", ".old", ".ray"].
# Logs in /tmp/kbench_gpu, the steps' start, end and exit status in its steps.txt.
set -uo pipefail
cmd=${1:-start}
LOG=/tmp/kbench_gpu
OUT=${OUT:-/tmp/kbench_out}
mkdir -p "$LOG" "$OUT"
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
# Bytecode as a user's install has it: the GPU image's packages come without .pyc, so every
# process compiled torch, dynamo and Triton again (4.5 s of a `kbench eval`, 2026-12-06). A
# private PYTHONPYCACHEPREFIX did not reach the fork server, whose environment is the
# sandbox's (PYTHONDONTWRITEBYTECODE, no PYTHONPYCACHEPREFIX): the `start` step below
# compiles the packages in place, as `pip install` does (5 s on 16 cores).
unset PYTHONDONTWRITEBYTECODE
if [ "$cmd" = start ]; then
  kb=$(realpath "${2:-.kb}")
  [ -n "${OLD_TREE:-}" ] && OLD_TREE=$(realpath "$OLD_TREE")
  [ -n "${EVOLVE_DB:-}" ] && EVOLVE_DB=$(realpath "$EVOLVE_DB")
  # The jobs run from a private copy of this tree: each device call replaces the carried
  # tree, which deleted a running job's working directory (the 2026-12-06 session).
  if [ -z "${DRY_RUN:-}" ] && [ "$PWD" != /tmp/kbench_tree ]; then
    rm -rf /tmp/kbench_tree && cp -rL . /tmp/kbench_tree && cd /tmp/kbench_tree || exit 1
    # The carried KernelBench data and older tree are replaced by each call as well.
    rm -rf /tmp/kbench_kb && cp -rL "$kb" /tmp/kbench_kb && kb=/tmp/kbench_kb || exit 1
    if [ -n "${EVOLVE_DB:-}" ]; then
      cp "$EVOLVE_DB" /tmp/kbench_evolve.db && EVOLVE_DB=/tmp/kbench_evolve.db || exit 1
    fi
    if [ -n "${OLD_TREE:-}" ]; then
      rm -rf /tmp/kbench_old && cp -rL "$OLD_TREE" /tmp/kbench_old && OLD_TREE=/tmp/kbench_old || exit 1
    fi
    export PYTHONPATH=$PWD:/tmp/site
  fi
  if [ -z "${DRY_RUN:-}" ]; then  # DRY_RUN=1 prints the job script and starts nothing
    # A second start on the same warm machine: the last run's end marker would end `wait` at
    # once, and its failures would read as this run's (the 2026-12-07 session's later calls)
    rm -f "$LOG/finished"
    [ -f "$LOG/steps.txt" ] && echo "--- start $(date +%T)" >> "$LOG/steps.txt"
    [ -f "$LOG/gpu_failures.log" ] && mv "$LOG/gpu_failures.log" "$LOG/gpu_failures.$(date +%H%M%S).log"
    if [ -d .whl ]; then
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl >/dev/null 2>&1 || { echo "wheel install failed"; exit 1; }
    fi
    sp=$(python3 -c "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))")
    if [ -w "$sp" ]; then
      python3 -m compileall -q -j 0 -x '/tests?/' "$sp" /tmp/site >/dev/null 2>&1
      echo "bytecode compiled in $sp and /tmp/site (as pip install does)" | tee "$LOG/device.txt"
    else
      echo "bytecode NOT compiled: $sp is read-only; process starts include compiling" | tee "$LOG/device.txt"
    fi
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$LOG/device.txt"
    python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)" | tee -a "$LOG/device.txt"
    git rev-parse --short HEAD 2>/dev/null | tee -a "$LOG/device.txt"
    # The default sandbox backend (the fork server) on this GPU, once: if it cannot verify an
    # honest example, everything after runs in the plain subprocess backend and says so.
    if ! timeout 300 python3 bench/smoke_backend.py > "$LOG/smoke.log" 2>&1; then
      echo "fork server smoke check FAILED; falling back to subprocess" | tee -a "$LOG/device.txt"
      export KBENCH_SANDBOX_BACKEND=subprocess
    fi
    tail -3 "$LOG/smoke.log"
  fi
  steps=${3:-verdicts,acceptance,tests}
  EXAMPLES8=level1/relu,level1/softmax,level1/matmul,level2/gemm_bias_relu,level3/mlp,attention/gqa_causal_prefill,kvcache/kv_int8_quant,quant/w8a8_dynamic
  # One step at a time, in the order STEPS names them (KernelBench's inputs are 6-9 GiB each,
  # and steps side by side ran a card out of memory: docs/benchmarks.md, run A). Each step
  # has its own time limit (STEP_LIMIT_S, default 900 s), so one stuck step cannot eat the
  # rest of a session.
  lim=${STEP_LIMIT_S:-900}
  step_cmd() {
    case $1 in
      verdicts) echo "python3 bench/kernelbench_verdicts.py --kernelbench $kb --device cuda \
          --no-timing ${VERDICTS_K:+-k $VERDICTS_K} --out $LOG/verdicts.json \
          --markdown $LOG/verdicts.md > $LOG/verdicts.log 2>&1";;
      acceptance) echo "python3 bench/acceptance.py --device cuda --jobs 2 \
          --json $LOG/acceptance.json --markdown $LOG/acceptance.md > $LOG/acceptance.log 2>&1";;
      # -v: each test's outcome is in the log as it ends, so a step cut by its time limit
      # still says which tests passed (with -q only dots came back). Three pytest processes at
      # once: test_gpu.py's and test_gpu_faults.py's verifications in two (xdist), and the
      # extension builds (CPU) of test_provenance.py with the self-test's GPU rows in the
      # third; the device lock is shared by all processes, so timing stays exclusive.
      # GPU_TESTS=ids runs just those, in one process.
      # KBENCH_TEST_FAILLOG: each failure's report written as it happens (tests/conftest.py),
      # so a step cut by its time limit still says why a test failed
      tests) if [ -n "${GPU_TESTS:-}" ]; then
          echo "export KBENCH_TEST_FAILLOG=$LOG/gpu_failures.log KBENCH_TEST_PROGRESS=$LOG/gpu_progress.log; python3 -m pytest -v -rA --durations=15 -o faulthandler_timeout=120 -m gpu $GPU_TESTS -p no:cacheprovider \
          > $LOG/gpu_tests.log 2>&1"
        else
          echo "export KBENCH_TEST_FAILLOG=$LOG/gpu_failures.log KBENCH_TEST_PROGRESS=$LOG/gpu_progress.log; \
          python3 -m pytest -v -rA --durations=15 -o faulthandler_timeout=120 -m gpu tests/test_provenance.py \
          tests/test_selftest.py -p no:cacheprovider > $LOG/gpu_tests_b.log 2>&1 & \
          python3 -m pytest -v -rA --durations=15 -o faulthandler_timeout=120 -m gpu tests/test_gpu.py tests/test_gpu_faults.py \
          -n ${GPU_TEST_WORKERS:-2} -p no:cacheprovider \
          > $LOG/gpu_tests.log 2>&1; wait"
        fi;;
      # the self-test's whole table as a user sees it (its GPU rows also run, and are printed,
      # in the tests step: test_selftest.py's test_gpu_rows_pass_on_a_gpu, about 2 minutes)
      selftest) echo "python3 -m kbench.cli doctor --self-test --gpu > $LOG/selftest.log 2>&1";;
      pipeline) echo "python3 bench/bench_pipeline.py ${OLD_TREE:+--compare $OLD_TREE} \
          --reps 2 ${PIPELINE_ONLY:+--only $PIPELINE_ONLY} ${OLD_PROBLEMS:+--old-problems $OLD_PROBLEMS} \
          ${OLD_ONLY:+--old-only $OLD_ONLY} --out $LOG/pipeline.json \
          > $LOG/pipeline.log 2>&1";;
      evolve) echo "python3 bench/evolve_replay.py --out $LOG/evolve.jsonl > $LOG/evolve.log 2>&1; \
          python3 -m kbench.cli run --model replay:$LOG/evolve.jsonl --strategy evolve --islands 2 \
          --population 2 --generations ${EVOLVE_GENERATIONS:-3} --name evolve-demo --store $LOG/evolve.db \
          --problems $EXAMPLES8 >> $LOG/evolve.log 2>&1; python3 -m kbench.cli runs show evolve-demo \
          --store $LOG/evolve.db --lineage >> $LOG/evolve.log 2>&1";;
      # the eight examples as they ship, one sample each (replay of kbench/examples): a run
      # to export in a minute where evolve takes five (EXPORT_RUN=examples)
      examples) echo "python3 -m kbench.cli run --model replay:kbench/examples --samples 1 \
          --name examples --store $LOG/evolve.db --problems ${EXAMPLES_PROBLEMS:-$EXAMPLES8} > $LOG/examples.log 2>&1; \
          python3 -m kbench.cli runs show examples --store $LOG/evolve.db >> $LOG/examples.log 2>&1";;
      # export (after evolve, or EVOLVE_DB=FILE: an evolve.db brought back by an earlier session):
      # the run's winners as a package, installed here, its own tests
      # on CUDA (Inductor compiling the triton ops, no graph break) and its bench.py
      export) echo "python3 -m kbench.cli export ${EXPORT_RUN:-evolve-demo} --store ${EVOLVE_DB:-$LOG/evolve.db} --out $LOG/pkg \
          --name kbops --force > $LOG/export.log 2>&1; (cd $LOG/pkg && $([ "${EXPORT_TESTS:-1}" = 0 ] \
          || echo "PYTHONPATH=$LOG/pkg:\$PYTHONPATH python3 -m pytest -q --pyargs kbops -p no:cacheprovider;") \
          PYTHONPATH=$LOG/pkg:\$PYTHONPATH python3 bench.py ${EXPORT_BENCH_ARGS:-}; \
          $([ -z "${EXPORT_BENCH_ARGS2:-}" ] || echo "echo '--- bench.py $EXPORT_BENCH_ARGS2'; \
          PYTHONPATH=$LOG/pkg:\$PYTHONPATH python3 bench.py $EXPORT_BENCH_ARGS2;")) >> $LOG/export.log 2>&1; \
          $([ "${EXPORT_PROFILE:-1}" = 0 ] || echo "python3 bench/export_profile.py $LOG/pkg \
          --calls 100 >> $LOG/export.log 2>&1;") \
          $([ -z "${EXPORT_GAP:-}" ] || echo "echo '--- export_gap.py --op $EXPORT_GAP' >> $LOG/export.log; \
          python3 bench/export_gap.py $LOG/pkg --op $EXPORT_GAP >> $LOG/export.log 2>&1")";;
      # where a warm child's first checked call goes (cProfile); each example twice, the
      # second run's Triton builds from the cache as a re-verification's are
      firstcall) echo "for p in level1/relu level1/softmax; do for i in 1 2; do \
          python3 bench/first_call_profile.py --problem \$p --cache $LOG/fc_cache --top 40; \
          done; done > $LOG/firstcall.log 2>&1";;
      # a warm verification's parent and child under cProfile, function by function
      vprofile) echo "for p in level1/relu level1/softmax level3/mlp; do \
          python3 bench/verify_profile.py --problem \$p --device cuda --top 45; \
          done > $LOG/vprofile.log 2>&1";;
      # kbench eval's parent, fresh directory, warm store: where its time outside the phases goes
      evalprofile) echo "python3 bench/eval_profile.py --problem level1/softmax --device cuda \
          --top 50 > $LOG/evalprofile.log 2>&1";;
      # the parent's references made beside the child: level3/mlp, this tree vs OLD_TREE
      overlap) echo "python3 bench/case_overlap.py --compare ${OLD_TREE:-.} --device cuda \
          --problem level3/mlp > $LOG/overlap.log 2>&1";;
      # softmax's kernel on six allocations of its 1 GB input, two passes: placement or clocks
      placement) echo "python3 bench/placement_spread.py --allocs 6 --passes 2 > $LOG/placement.log 2>&1";;
      # the fork server's imports, one by one, three processes in a row
      serverstart) echo "python3 bench/server_start.py --runs 3 > $LOG/serverstart.log 2>&1";;
      # the parent's output compare, this tree against OLD_TREE's, on 1 GiB outputs
      compare) echo "python3 bench/compare_speed.py --device cuda ${OLD_TREE:+--compare $OLD_TREE} \
          > $LOG/compare.log 2>&1";;
      selection) echo "python3 bench/check_selection.py > $LOG/selection.log 2>&1";;
      confirm) echo "python3 bench/check_confirm.py ${CONFIRM_PROBLEMS:+--problems $CONFIRM_PROBLEMS} \
          --json $LOG/confirm.json > $LOG/confirm.log 2>&1";;
      # one candidate file verified alone, as a user would (EVAL_ARGS: kbench eval's arguments)
      eval) echo "python3 -m kbench.cli eval ${EVAL_ARGS:-} --explain --store $LOG/eval.db \
          > $LOG/eval.log 2>&1";;
      crosscheck) echo "python3 bench/baseline_crosscheck.py ${CROSSCHECK_ARGS:-} --json $LOG/crosscheck.json \
          > $LOG/crosscheck.log 2>&1";;
      tune) echo "$([ "${TUNE_GRID:-1}" = 0 ] || echo "python3 bench/tune_vs_grid.py \
          --store $LOG/tune.db > $LOG/tune.log 2>&1;") \
          python3 bench/tune_vs_grid.py --examples --trials ${TUNE_TRIALS:-20} --store $LOG/tune.db \
          > $LOG/tune_examples.log 2>&1";;
      load) echo "python3 bench/load_test.py --candidates 200 --device cuda --kill-after 90 --cuda 8 --logs $LOG/load --store $LOG/load.db \
          --json $LOG/load.json > $LOG/load.log 2>&1";;
      throughput) echo "python3 bench/throughput.py --gpus 1 --executor local ${THROUGHPUT_ARGS:-} \
          --out $LOG/throughput.json > $LOG/throughput.log 2>&1";;
      # Ray from .ray/ (the wheel unpacked, Java jars and dashboard client dropped, binaries
      # stripped, xz: 27 MB where the wheel is 79 MB, over a call's 64 MiB carry) and the
      # Python packages Ray needs that the GPU image lacks
      throughput_ray) echo "tar xJf .ray/ray.tar.xz -C /tmp/site && python3 -m pip install -q \
          --no-index --no-deps --no-compile --upgrade --target /tmp/site .ray/*.whl >/dev/null 2>&1; \
          python3 bench/throughput.py --gpus 1 --executor ray ${THROUGHPUT_ARGS:-} --out $LOG/throughput_ray.json \
          > $LOG/throughput_ray.log 2>&1";;
      *) echo "echo unknown step $1 >&2";;
    esac
  }
  script="python3 -m kbench.cli doctor > $LOG/doctor.log 2>&1"
  for st in ${steps//,/ }; do
    l=$lim; [ "$st" != "${st#*:}" ] && l=${st#*:}  # STEP:SECONDS, this step's own limit
    st=${st%%:*}
    script="$script; echo \"\$(date +%T) start $st (limit ${l} s)\" >> $LOG/steps.txt; \
      timeout -k 10 $l bash -c '$(step_cmd "$st" | sed "s/'/'\\\\''/g")'; \
      rc=\$?; echo \"\$(date +%T) end $st rc=\$rc\$([ \$rc = 124 ] && echo ' (time limit)')\" \
      >> $LOG/steps.txt"
  done
  if [ -n "${DRY_RUN:-}" ]; then echo "$script"; exit 0; fi
  setsid bash -c "$script; touch $LOG/finished" > /dev/null 2>&1 < /dev/null &
  echo started
  exit 0
fi
limit=${2:-540}
t=0
while [ ! -f "$LOG/finished" ] && [ "$t" -lt "$limit" ]; do sleep 10; t=$((t + 10)); done
# one archive: at most 8 files come back from $OUT (logs, databases, the exported package)
tar czf "$OUT/kbench_gpu.tgz" -C "$(dirname "$LOG")" "$(basename "$LOG")" 2>/dev/null || true
echo "--- finished: $([ -f "$LOG/finished" ] && echo yes || echo no) after ${t}s"
cat "$LOG/steps.txt" 2>/dev/null
tail -5 "$LOG/gpu_tests.log" 2>/dev/null
grep -a "FAILED$" "$LOG/gpu_failures.log" 2>/dev/null | head -20
tail -30 "$LOG/verdicts.log" 2>/dev/null
tail -8 "$LOG/acceptance.log" 2>/dev/null
tail -30 "$LOG/pipeline.log" 2>/dev/null
tail -12 "$LOG/tune.log" "$LOG/tune_examples.log" 2>/dev/null
tail -12 "$LOG/selftest.log" "$LOG/confirm.log" "$LOG/crosscheck.log" "$LOG/export.log" \
  "$LOG/load.log" "$LOG/selection.log" "$LOG/throughput.log" "$LOG/throughput_ray.log" 2>/dev/null
tail -20 "$LOG/selection.log" 2>/dev/null
tail -40 "$LOG/evolve.log" 2>/dev/null
tail -20 "$LOG/examples.log" 2>/dev/null
