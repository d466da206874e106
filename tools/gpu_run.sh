#!/usr/bin/env bash
# GPU tests, sweeps and benchmarks in one go on a GPU host. Wheels found in .whl/ are installed first (for
# hosts without network: pip download fla-core into .whl/), and fla's autotuning
# results are kept in .cache/triton-cache.tgz between runs (fla autotunes every new shape for about a minute).
# Usage: bash tools/gpu_run.sh STAGE... (stages: tests, alltests, errors, sweep, quick, bench); results under $OUT.
set -u
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/triton-cache
if [ -f .cache/triton-cache.tgz ]; then mkdir -p "$TRITON_CACHE_DIR" && tar xzf .cache/triton-cache.tgz -C "$TRITON_CACHE_DIR"; fi
if ls .whl/*.whl >/dev/null 2>&1; then python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl; fi
export PYTHONPATH=$PWD:/tmp/site:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
for stage in "$@"; do
  start=$(date +%s)
  case $stage in
    tests) timeout 420 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_kernels.py 2>&1 | tail -40 | tee "$OUT/tests.log" ;;
    alltests) timeout 480 python3 -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tail -60 | tee "$OUT/tests.log" ;;
    errors) timeout 400 python3 tools/gpu_errors.py "$OUT/errors.json" 2>&1 | grep -E "^(random|extreme|growing)" ;;
    sweep) timeout 400 python3 tools/gpu_sweep.py "$OUT/sweep.json" 2>&1 | tail -60 ;;
    quick) timeout 300 python3 -m fastkda.bench --quick --out-dir "$OUT" 2>&1 | tail -30 ;;
    bench) timeout 580 python3 -m fastkda.bench --out-dir "$OUT" 2>&1 | tail -40 ;;
    *) echo "unknown stage $stage" ;;
  esac
  echo "== stage $stage took $(( $(date +%s) - start )) s"
done
# keep the autotuning results for the next run
(cd "$TRITON_CACHE_DIR" && find . -name '*autotune*' | tar czf "$OUT/triton-cache.tgz" -T - 2>/dev/null) && ls -la "$OUT"
