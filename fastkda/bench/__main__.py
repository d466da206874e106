"""`python -m fastkda.bench`: on a GPU, times fastkda against every importable baseline and writes JSON, a
markdown table and a plot; on a CPU-only machine, runs a small case through the Triton interpreter and checks
it against the float64 reference."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

CPU_TOLERANCE = 1e-2


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fastkda.bench", description=__doc__)
    p.add_argument("--cases", default=None, help="comma-separated case names (default: the full table)")
    p.add_argument("--quick", action="store_true", help="three cases: 96, 32 and 4 heads (under 2 minutes on an H100)")
    p.add_argument("--list", action="store_true", help="print the case names and exit")
    p.add_argument("--reps", type=int, default=20, help="timed repetitions per backend and case")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    p.add_argument("--out-dir", default="bench-results", help="where the JSON, markdown and PNG go")
    p.add_argument("--name", default=None, help="file stem (default: results_<gpu>)")
    p.add_argument("--no-baselines", action="store_true", help="time fastkda only")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--serial-compile", action="store_true",
                   help="compile in the timing process only (default: worker processes compile every kernel "
                        "first, in parallel; the figures are the same, a first run is several times shorter)")
    p.add_argument("--render", default=None, metavar="JSON", help="only render an existing result JSON")
    return p.parse_args(argv)


def select_cases(args):
    from fastkda.bench.cases import CASES, DEFAULT, QUICK
    if args.cases:
        names = [n.strip() for n in args.cases.split(",") if n.strip()]
        unknown = [n for n in names if n not in CASES]
        if unknown:
            raise SystemExit(f"--cases: unknown case names {unknown}; --list shows them")
        return [CASES[n] for n in names]
    return QUICK if args.quick else DEFAULT


def gpu_stem(gpu_name: str) -> str:
    return "results_" + re.sub(r"[^0-9A-Za-z]+", "_", gpu_name).strip("_")


def cpu_smoke() -> int:
    """A verified small run under the Triton interpreter (the kernels, not the reference path)."""
    os.environ["TRITON_INTERPRET"] = "1"
    import warnings

    import torch

    # numpy, under the interpreter, warns of the inf (and inf - inf) in score entries the kernel masks out
    for what in ("overflow encountered", "invalid value encountered"):
        warnings.filterwarnings("ignore", what, RuntimeWarning)

    from fastkda.bench.cases import CPU_SMOKE
    from fastkda.bench.harness import make_inputs, run_fastkda
    from fastkda.reference import kda_chunked_reference

    case = CPU_SMOKE
    inp = make_inputs(case, torch.device("cpu"))
    out = run_fastkda(case, inp)
    ref, _, _ = kda_chunked_reference(
        inp["q"], inp["k"], inp["v"], inp["g"], inp["beta"], initial_state=inp["h0"], use_qk_l2norm_in_kernel=True,
        use_gate_in_kernel=True, use_beta_sigmoid_in_kernel=True, lower_bound=-5.0, A_log=inp["A_log"],
        dt_bias=inp["dt_bias"])
    err = ((out.double() - ref).norm() / ref.norm()).item()
    ok = err <= CPU_TOLERANCE
    print(f"fastkda on the CPU (Triton interpreter), case {case.name} (T={case.T}, heads {case.H}/{case.value_heads}, "
          f"K={case.K}, V={case.V}, lower-bounded gate): RMS-relative error vs the float64 reference {err:.2e} "
          f"({'ok' if ok else 'FAILED'}, tolerance {CPU_TOLERANCE:.0e}).")
    print("No GPU here: timings need a CUDA GPU; run the same command on one for the benchmark.")
    return 0 if ok else 1


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        from fastkda.bench.cases import DEFAULT
        print("\n".join(c.name for c in DEFAULT))
        return 0
    if args.render:
        from fastkda.bench.render import render
        md, png = render(Path(args.render), plot_png=not args.no_plot)
        print(md.read_text())
        return 0
    began = time.perf_counter()
    import torch
    if not torch.cuda.is_available():
        return cpu_smoke()
    cases = select_cases(args)
    baselines = () if args.no_baselines else ("fla", "flash_kda")
    compiling = None
    if not args.serial_compile:
        from fastkda.bench.warmup import CompileInBackground
        print(f"compiling the kernels of {len(cases)} cases in parallel processes first", flush=True)
        compiling = CompileInBackground([c.name for c in cases], baselines)
        if not args.no_plot:
            try:  # meanwhile: matplotlib's first import on a machine builds its font cache
                import matplotlib.pyplot  # noqa: F401
            except ImportError:
                pass
    from fastkda.bench.harness import available_baselines, run_cases
    from fastkda.bench.render import markdown_table, render
    if baselines and available_baselines()["fla"] and args.serial_compile:
        print("fla autotunes its kernels on first use of each head count (a minute or more each on an H100) and "
              "keeps the results on disk: a first run on a machine takes that much longer.", flush=True)
    result = run_cases(cases, warmup=args.warmup, reps=args.reps, baselines=baselines, compiling=compiling)
    result["wall_s"] = time.perf_counter() - began  # the whole run, compilation included
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{args.name or gpu_stem(result['environment']['gpu'])}.json"
    path.write_text(json.dumps(result, indent=1))
    render(path, plot_png=not args.no_plot)
    print(markdown_table(result))
    print(f"wrote {path} and its .md/.png; the run took {result['wall_s']:.0f} s, compilation and autotuning included")
    return 0


if __name__ == "__main__":
    sys.exit(main())
