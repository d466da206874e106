"""Host time per call of `fastkda.chunk_kda` on the benchmark's cases: the GPU runs a sleep kernel queued before each
call, so no launch waits for it, and the time is the host's alone. With --base DIR, the fastkda package of another
checkout (DIR/fastkda) is timed in the same process, in alternating rounds: a host's speed drifts by up to 2x between
runs (docs/perf-notes.md v42), the ratio of two medians taken one after the other much less. The JSON gives the
median of the rounds' ratios and their spread; --base pointing at this same checkout measures the tool's own spread
(about 10% per case on an H100's host, perf-notes v43). Writes JSON.

Usage: python tools/host_time.py OUT.json [--base DIR] [--rounds N] [case ...]"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import fastkda
from fastkda.bench.cases import CASES
from fastkda.bench.harness import _gate_kwargs, make_inputs

BASE = "fastkda_base"


def import_as_base(checkout: Path):
    """DIR/fastkda imported as fastkda_base (its imports and its operator's namespace renamed, so that both packages
    and both operators coexist)."""
    root = Path(tempfile.mkdtemp())
    shutil.copytree(checkout / "fastkda", root / BASE)
    for path in (root / BASE).rglob("*.py"):
        text = path.read_text()
        text = re.sub(r"\bfastkda\.", BASE + ".", text)
        text = re.sub(r"\bimport fastkda\b", "import " + BASE, text)
        text = text.replace('"fastkda::', f'"{BASE}::').replace("torch.ops.fastkda.", f"torch.ops.{BASE}.")
        path.write_text(text)
    sys.path.insert(0, str(root))
    return importlib.import_module(BASE)


def caller(package, case, inp):
    def call():
        return package.chunk_kda(
            inp["q"], inp["k"], inp["v"], inp["g"], inp["beta"], initial_state=inp["h0"], output_final_state=True,
            use_qk_l2norm_in_kernel=True, use_beta_sigmoid_in_kernel=True, A_log=inp["A_log"],
            dt_bias=inp["dt_bias"], cu_seqlens=inp["cu_seqlens"], cu_seqlens_cpu=inp["cu_seqlens_cpu"],
            **_gate_kwargs(case))
    return call


def round_ms(call, calls: int = 20) -> float:
    """Median host time of `calls` calls, each after a 10 ms sleep kernel (about 2e7 cycles) on the GPU."""
    times = []
    for _ in range(calls):
        torch.cuda._sleep(20_000_000)
        start = time.perf_counter_ns()
        call()
        times.append((time.perf_counter_ns() - start) / 1e6)
        torch.cuda.synchronize()
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("cases", nargs="*", help="benchmark case names (default: all)")
    parser.add_argument("--base", type=Path, help="a checkout whose package is timed beside this one")
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_intermixed_args()
    if not torch.cuda.is_available():
        sys.exit("host_time.py: needs a CUDA GPU (on the CPU the forward is the reference, not the kernels)")
    unknown = set(args.cases) - set(CASES)
    if unknown:
        sys.exit(f"host_time.py: unknown cases {sorted(unknown)}; known: {sorted(CASES)}")
    base = import_as_base(args.base) if args.base else None
    device = torch.device("cuda")
    result = dict(device=torch.cuda.get_device_name(), rounds=args.rounds, cases={})
    for name in args.cases or [c for c in CASES if c != "cpu-smoke"]:
        case = CASES[name]
        inp = make_inputs(case, device)
        calls = {"fastkda": caller(fastkda, case, inp)}
        if base:
            calls[BASE] = caller(base, case, inp)
        outputs = {k: call() for k, call in calls.items()}
        torch.cuda.synchronize()
        rounds = {k: [] for k in calls}
        for r in range(args.rounds):
            for k in (list(calls) if r % 2 == 0 else list(reversed(calls))):
                rounds[k].append(round_ms(calls[k]))
        row = {f"{k}_ms": round(statistics.median(v), 4) for k, v in rounds.items()}
        if base:
            ratios = sorted(a / b for a, b in zip(rounds["fastkda"], rounds[BASE]))
            row["ratio"] = round(statistics.median(ratios), 3)
            if len(ratios) > 1:
                row["ratio_quartiles"] = [round(q, 3) for q in statistics.quantiles(ratios, n=4)[::2]]
            row["bit_equal"] = all(torch.equal(a, b) for a, b in zip(outputs["fastkda"], outputs[BASE]))
        result["cases"][name] = row
        print(name, row, flush=True)
        del inp, outputs
        torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
