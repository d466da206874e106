"""Runs one benchmark case a few times (for a profiler to attach to). Usage: python tools/profile_one.py CASE"""

import sys

import torch

from fastkda.bench.cases import CASES
from fastkda.bench.harness import make_inputs, run_fastkda

case = CASES[sys.argv[1]]
inp = make_inputs(case, torch.device("cuda"))
with torch.inference_mode():
    for _ in range(3):
        run_fastkda(case, inp)
torch.cuda.synchronize()
