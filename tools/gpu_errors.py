"""Prints and writes (JSON) the RMS-relative error against the float64 reference of every GPU test case of
tests/test_kernels.py: the figures behind the error bars. Usage: python tools/gpu_errors.py OUT.json"""

from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from kda_cases import run_case  # noqa: E402
from test_kernels import GPU_EXTREME, GPU_RANDOM, GROWING  # noqa: E402


def main():
    out = {}
    for group, cases in (("random", GPU_RANDOM), ("extreme", GPU_EXTREME), ("growing", [GROWING])):
        for case in cases:
            errs = run_case(case, torch.device("cuda"))
            out[f"{group} {case.id}"] = errs
            print(group, case.id, {k: f"{v:.2e}" for k, v in errs.items()}, flush=True)
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
