#!/usr/bin/env bash
# One call on the GPU machine: install the carried wheels, run the GPU tests, then the requested stages.
# Usage: bash tools/device_run.sh STAGE... (stages: tests, sweep, quick, bench). Results go to $OUT.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/triton-cache
if [ -f .cache/triton-cache.tgz ]; then mkdir -p "$TRITON_CACHE_DIR" && tar xzf .cache/triton-cache.tgz -C "$TRITON_CACHE_DIR"; fi
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl >/dev/null 2>&1 || echo "no wheels installed"
export PYTHONPATH=$PWD:/tmp/site:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
for stage in "$@"; do
  start=$(date +%s)
  case $stage in
    tests) timeout 420 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_kernels.py 2>&1 | tail -40 | tee "$OUT/tests.log" ;;
    alltests) timeout 480 python3 -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tail -60 | tee "$OUT/tests.log" ;;
    sweep) timeout 400 python3 tools/gpu_sweep.py "$OUT/sweep.json" 2>&1 | tail -60 ;;
    quick) timeout 300 python3 -m fastkda.bench --quick --out-dir "$OUT" 2>&1 | tail -30 ;;
    bench) timeout 580 python3 -m fastkda.bench --out-dir "$OUT" 2>&1 | tail -40 ;;
    *) echo "unknown stage $stage" ;;
  esac
  echo "== stage $stage took $(( $(date +%s) - start )) s"
done
# keep fla's autotune results and compiled kernels for the next call (my own kernels change, theirs do not)
(cd "$TRITON_CACHE_DIR" && find . -name '*autotune*' | tar czf "$OUT/triton-cache.tgz" -T - 2>/dev/null) && ls -la "$OUT"
