#!/usr/bin/env bash
# Nsight Compute per-instruction profile (stall samples by SASS line) of one kernel on one case:
# $OUT/prepare_sass.csv.gz (the page runs to megabytes) and the profiled cubin (its line table maps the rows to
# source lines); the report itself is removed. Then: python tools/ncu_lines.py OUT/prepare_sass.csv.gz OUT/KERNEL.cubin
# Usage: bash tools/ncu_source.sh [CASE] [KERNEL]
set -u
OUT=${OUT:-gpu-results}; mkdir -p "$OUT"
kernel=${2:-kda_chunk_prepare_kernel}
export PYTHONPATH=$PWD:${PYTHONPATH:-} TRITON_CACHE_DIR=$(mktemp -d)   # a fresh cache: one cubin per kernel
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
case=${1:-T8192-H32}
python3 tools/profile_one.py "$case"
timeout 300 "$NCU" -k "regex:$kernel" --launch-skip 1 --launch-count 1 --set full --import-source yes \
  -f -o "$OUT/prepare" python3 tools/profile_one.py "$case" > "$OUT/ncu_log.txt" 2>&1
"$NCU" -i "$OUT/prepare.ncu-rep" --page source --csv --print-source sass 2>&1 | gzip > "$OUT/prepare_sass.csv.gz"
"$NCU" -i "$OUT/prepare.ncu-rep" --page details > "$OUT/prepare_details.txt" 2>&1
find "$TRITON_CACHE_DIR" -name "$kernel.cubin" -exec cp {} "$OUT/" \;
rm -f "$OUT/prepare.ncu-rep"
grep -E "Duration|Registers|Occupancy|Issue|Stall" "$OUT/prepare_details.txt" | head -30
