"""GPU time of the forward for two or more copies of the package, the way docs/perf-notes.md's A/B rows are taken:
each variant (a directory holding a `fastkda` package: a checkout, or a copy with one change) runs in its own process
with its own Triton cache, the variants alternate, and the sequence repeats for several rounds, since a card's speed
drifts between processes by about as much as the changes being measured. Each process takes MEDIANS medians of 20
CUDA-event timings (L2 flushed, the benchmark's pattern) per case. Every variant's o and final state are compared
with the first variant's: bit for bit, and by RMS-relative difference (a timing-only copy shows as not equal).
Writes JSON: per case and variant every median, their min, max and median, the change against the first variant's
median, and the comparison.

Usage: python tools/ab_time.py OUT.json --variant NAME=DIR --variant NAME=DIR [--rounds R] [--medians M] CASE ...
(cases: `python -m fastkda.bench --list`; each variant's package needs `bench.harness.run_fastkda_with_state`)"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WORKER_TIMEOUT_S = 600


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python tools/ab_time.py", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="the JSON to write")
    p.add_argument("cases", nargs="+", help="benchmark case names")
    p.add_argument("--variant", action="append", required=True, metavar="NAME=DIR",
                   help="a directory holding a fastkda package; the first is the base (at least two)")
    p.add_argument("--rounds", type=int, default=2, help="how many times the sequence of variants runs")
    p.add_argument("--medians", type=int, default=2, help="medians of 20 timings per process and case")
    a = p.parse_args(argv)
    variants = []
    for v in a.variant:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            p.error(f"--variant expects NAME=DIR, got {v!r}")
        if not (Path(path) / "fastkda" / "__init__.py").is_file():
            p.error(f"--variant {name}: {path} holds no fastkda package")
        variants.append((name, str(Path(path).resolve())))
    if len(variants) < 2 or len({n for n, _ in variants}) != len(variants):
        p.error("--variant: at least two, with distinct names")
    if a.rounds < 1 or a.medians < 1:
        p.error("--rounds and --medians must be at least 1")
    a.variant = variants
    return a


def worker(pkg: str, outputs: Path, medians: int, cases: list[str]) -> dict:
    """In a process of its own: the package at pkg on the cases; {case: [ms, ...]}, outputs saved under outputs."""
    sys.path.insert(0, pkg)
    import torch

    import fastkda
    from fastkda.bench import harness
    from fastkda.bench.cases import CASES
    if not Path(fastkda.__file__).resolve().is_relative_to(pkg):
        raise SystemExit(f"imported {fastkda.__file__}, not the package under {pkg}")
    dev = torch.device("cuda")
    flush = harness.L2Flush(dev)
    res = {}
    for name in cases:
        case = CASES[name]
        inp = harness.make_inputs(case, dev)
        o, ht = harness.run_fastkda_with_state(case, inp)
        torch.cuda.synchronize()
        path = outputs / f"{name}.pt"
        if not path.exists():
            torch.save((o.cpu(), ht.cpu()), path)
        fn = lambda: harness.run_fastkda(case, inp)  # noqa: E731
        res[name] = [statistics.median(harness.time_ms(fn, flush, 3, 20)) for _ in range(medians)]
        print(f"{name:24s} " + " ".join(f"{m:.4f}" for m in res[name]), flush=True)
    return res


def compare(base: Path, other: Path) -> dict:
    """o and final state of a variant against the base's: bit-equal, and RMS-relative difference."""
    import torch
    out = {}
    for label, a, b in zip(("o", "final"), torch.load(other), torch.load(base), strict=True):
        a, b = a.double(), b.double()
        out[label] = dict(equal=bool(torch.equal(a, b)), rel=float((a - b).norm() / b.norm().clamp_min(1e-30)))
    return out


def summarize(times: dict, names: list[str]) -> dict:
    """{case: {variant: {medians, min, max, median, change}}}: change against the first variant's median."""
    table = {}
    for case, by_variant in times.items():
        base = statistics.median(by_variant[names[0]])
        table[case] = {n: dict(medians=m, min=min(m), max=max(m), median=statistics.median(m),
                               change=statistics.median(m) / base - 1) for n, m in by_variant.items()}
    return table


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        pkg, outputs, medians, out_json, *cases = sys.argv[2:]
        Path(out_json).write_text(json.dumps(worker(pkg, Path(outputs), int(medians), cases)))
        return
    a = parse_args(argv)
    names = [n for n, _ in a.variant]
    times = {c: {n: [] for n in names} for c in a.cases}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for r in range(a.rounds):
            for name, pkg in a.variant:
                print(f"-- round {r + 1}, {name} ({pkg})", flush=True)
                (tmp / name).mkdir(exist_ok=True)
                env = {**os.environ, "TRITON_CACHE_DIR": str(tmp / f"cache-{name}")}
                res_json = tmp / f"{name}-{r}.json"
                subprocess.run([sys.executable, __file__, "--worker", pkg, str(tmp / name), str(a.medians),
                                str(res_json), *a.cases], env=env, check=True, timeout=WORKER_TIMEOUT_S)
                for case, ms in json.loads(res_json.read_text()).items():
                    times[case][name] += ms
        table = summarize(times, names)
        for case in a.cases:
            for name in names[1:]:
                table[case][name]["versus_" + names[0]] = compare(tmp / names[0] / f"{case}.pt",
                                                                   tmp / name / f"{case}.pt")
    sys.path.insert(0, a.variant[0][1])     # the base's package: the checkout need not be on the path
    from fastkda.bench.harness import environment
    a.out.write_text(json.dumps(dict(environment=environment(), rounds=a.rounds, medians_per_process=a.medians,
                                     variants=dict(a.variant), cases=table), indent=1))
    for case in a.cases:
        for name in names:
            row = table[case][name]
            cmp = row.get("versus_" + names[0])
            same = "" if cmp is None else ("  outputs equal" if all(v["equal"] for v in cmp.values()) else
                                           "  outputs differ: " + ", ".join(f"{k} {v['rel']:.1e}"
                                                                           for k, v in cmp.items()))
            print(f"{case:24s} {name:12s} {row['min']:.4f}-{row['max']:.4f}  median {row['median']:.4f} "
                  f"({row['change'] * 100:+.1f}%){same}")


if __name__ == "__main__":
    main()
