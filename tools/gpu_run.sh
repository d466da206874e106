#!/usr/bin/env bash
# GPU tests, sweeps and benchmarks in one go on a GPU host. Wheels found in .whl/ are installed first (for
# hosts without network: pip download fla-core into .whl/), and fla's autotuning
# results are kept in .cache/triton-cache.tgz between runs (fla autotunes every new shape for about a minute).
# Usage: bash tools/gpu_run.sh STAGE... (stages: tests, alltests, errors, verify, sweep, quick, bench); results under $OUT.
# alltests runs the GPU tests in SHARDS parallel processes (default 12), each with one CPU thread for the float64
# reference: one process takes longer than a 10-minute window on a fresh machine (compiles and CPU references), and
# parallel ones with torch's default thread count oversubscribe the CPU. verify: alltests and errors at once.
set -u
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/triton-cache
if [ -f .cache/triton-cache.tgz ]; then mkdir -p "$TRITON_CACHE_DIR" && tar xzf .cache/triton-cache.tgz -C "$TRITON_CACHE_DIR"; fi
if ls .whl/*.whl >/dev/null 2>&1; then python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl; fi
export PYTHONPATH=$PWD:/tmp/site:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
# the GPU tests split round-robin over $SHARDS pytest processes; logs in $OUT/shard*.log, a summary line each
shard_tests() {
  local n=${SHARDS:-12} i
  python3 -m pytest -q -m gpu --collect-only -p no:cacheprovider tests 2>/dev/null | grep '::' > "$OUT/gpu-ids.txt"
  if [ ! -s "$OUT/gpu-ids.txt" ]; then echo "no GPU tests collected" | tee "$OUT/tests.log"; return 1; fi
  for i in $(seq 0 $((n - 1))); do
    local ids=()
    mapfile -t ids < <(awk -v n="$n" -v i="$i" 'NR % n == i' "$OUT/gpu-ids.txt")
    # an empty shard would run pytest with no ids, that is, the whole suite
    if [ ${#ids[@]} -eq 0 ]; then echo "exit 0" > "$OUT/shard$i.log"; continue; fi
    (OMP_NUM_THREADS=1 timeout 540 python3 -m pytest -q -p no:cacheprovider "${ids[@]}" > "$OUT/shard$i.log" 2>&1
     echo "exit $?" >> "$OUT/shard$i.log") &
  done
  wait
  for i in $(seq 0 $((n - 1))); do echo "shard $i: $(grep -E ' in [0-9.]+s' "$OUT/shard$i.log" | tail -1) ($(tail -1 "$OUT/shard$i.log"))"; done | tee "$OUT/tests.log"
  grep -h -E '^(FAILED|ERROR)' "$OUT"/shard*.log | tee -a "$OUT/tests.log"
}
# the error table; an argument caps the CPU threads of its float64 reference (when the shards run beside it)
errors() { if [ -n "${1:-}" ]; then export OMP_NUM_THREADS=$1; fi; timeout 540 python3 tools/gpu_errors.py "$OUT/errors.json" 2>&1 | grep -E "^(random|extreme|growing)" > "$OUT/errors.log"; tail -3 "$OUT/errors.log"; }

for stage in "$@"; do
  start=$(date +%s)
  case $stage in
    tests) timeout 420 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_kernels.py 2>&1 | tail -40 | tee "$OUT/tests.log" ;;
    alltests) shard_tests ;;
    errors) errors ;;
    verify) errors 3 & shard_tests; wait ;;
    sweep) timeout 400 python3 tools/gpu_sweep.py "$OUT/sweep.json" 2>&1 | tail -60 ;;
    quick) timeout 300 python3 -m fastkda.bench --quick --out-dir "$OUT" 2>&1 | tail -30 ;;
    bench) timeout 580 python3 -m fastkda.bench --out-dir "$OUT" 2>&1 | tail -40 ;;
    *) echo "unknown stage $stage" ;;
  esac
  echo "== stage $stage took $(( $(date +%s) - start )) s"
done
# keep the autotuning results for the next run
(cd "$TRITON_CACHE_DIR" && find . -name '*autotune*' | tar czf "$OUT/triton-cache.tgz" -T - 2>/dev/null) && ls -la "$OUT"
