#!/usr/bin/env bash
# Nsight Compute per-instruction profile (stall samples by SASS line) of the prepare kernel on one case:
# $OUT/prepare_sass.csv, to be joined with tools/sass_lines.py's line table by address.
set -u
OUT=${OUT:-gpu-results}; mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-} TRITON_CACHE_DIR=/tmp/triton-cache
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
case=${1:-T8192-H32}
python3 tools/profile_one.py "$case"
timeout 300 "$NCU" -k "regex:${2:-kda_chunk_prepare_kernel}" --launch-skip 1 --launch-count 1 --set full --import-source yes \
  -f -o "$OUT/prepare" python3 tools/profile_one.py "$case" > "$OUT/ncu_log.txt" 2>&1
"$NCU" -i "$OUT/prepare.ncu-rep" --page source --csv --print-source sass > "$OUT/prepare_sass.csv" 2>&1
"$NCU" -i "$OUT/prepare.ncu-rep" --page details > "$OUT/prepare_details.txt" 2>&1
head -c 600 "$OUT/prepare_sass.csv"; grep -E "Duration|Registers|Occupancy|Issue|Stall" "$OUT/prepare_details.txt" | head -30
