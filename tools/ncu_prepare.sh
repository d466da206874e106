#!/usr/bin/env bash
# Nsight Compute report of the two forward kernels on one case, as text under $OUT.
set -u
OUT=${OUT:-gpu-results}; mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-} TRITON_CACHE_DIR=/tmp/triton-cache
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
case=${1:-T8192-H32}
python3 tools/profile_one.py "$case"   # compile outside the profiler
for k in kda_chunk_prepare_kernel kda_chunk_state_kernel; do
  timeout 240 "$NCU" -k "regex:$k" --launch-skip 1 --launch-count 1 --section SpeedOfLight --section Occupancy \
    --section LaunchStats --section WarpStateStats --section ComputeWorkloadAnalysis --section InstructionStats \
    --section MemoryWorkloadAnalysis --section SourceCounters --print-details all \
    python3 tools/profile_one.py "$case" > "$OUT/ncu_$k.txt" 2>&1
  grep -E "Duration|Registers|Achieved Occupancy|Theoretical Occupancy|Stall|Warp Cycles|Issue Slots|Memory Throughput|Compute \(SM\)|Local" "$OUT/ncu_$k.txt" | head -40
done
