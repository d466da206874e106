"""When each kernel of a `fastkda.chunk_kda` call starts and ends on the GPU, in the benchmark's pattern (the L2 cache
flushed and the GPU idle 5 ms before each call, so that the host has queued the whole call): the torch profiler's
kernel records of eight calls, the first two dropped, each kernel's start and end in us from the end of the idle
(medians). Shows what stands before the prepare kernel, when the state programs enter and how long after the prepare
kernel they end (docs/perf-notes.md v46; the profiler adds about 2% to a call). Writes JSON.

Usage: python tools/call_timeline.py OUT.json [case ...]   (default: the 96-head cases)"""

from __future__ import annotations

import json
import statistics
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from fastkda.bench.cases import CASES
from fastkda.bench.harness import LEAD_CYCLES, L2Flush, make_inputs, run_fastkda

DEFAULT = ("T8192-H96", "varlen6-H96", "varlen1024x8-H96")
CALLS, DROPPED = 8, 2


def timeline(name: str, flush: L2Flush) -> dict:
    """{"i:kernel name": [start us, end us]} of one case, kernels in the order they start."""
    case = CASES[name]
    inp = make_inputs(case, torch.device("cuda"))
    for _ in range(3):          # compiled and planned before the records
        run_fastkda(case, inp)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(CALLS):
            flush()
            torch.cuda._sleep(LEAD_CYCLES)
            run_fastkda(case, inp)
        torch.cuda.synchronize()
    kernels = sorted((e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
                     key=lambda e: e.time_range.start)
    calls = []                  # [idle's end, (name, start, end), ...] a call
    for e in kernels:
        if "spin" in e.name.lower() or "sleep" in e.name.lower():      # torch.cuda._sleep's kernel
            calls.append([e.time_range.end])
        elif calls:
            calls[-1].append((e.name[:60], e.time_range.start, e.time_range.end))
    rows: dict[str, list] = {}
    for call in calls[DROPPED:]:
        t0 = call[0]
        # the next call's L2 flush comes after the call's own kernels: it is listed last, and is not the call's
        for i, (kname, start, end) in enumerate(call[1:]):
            rows.setdefault(f"{i}:{kname}", []).append((start - t0, end - t0))
    return {k: [round(statistics.median(s for s, _ in v), 1), round(statistics.median(e for _, e in v), 1)]
            for k, v in rows.items()}


def main(argv: list[str]) -> None:
    if not argv or not torch.cuda.is_available():
        sys.exit(__doc__)
    flush = L2Flush(torch.device("cuda"))
    out = {}
    for name in argv[1:] or DEFAULT:
        out[name] = timeline(name, flush)
        print(name, json.dumps(out[name]), flush=True)
    with open(argv[0], "w") as f:
        json.dump({"gpu": torch.cuda.get_device_name(), "cases": out}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
