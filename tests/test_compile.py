"""The Gluon kernels keep their wgmma products asynchronous: `tools/compile_report.py --check-wgmma` compiles every
variant the launcher builds for sm_90 with the ptxas that ships with Triton (no GPU needed) and fails where ptxas
serialized them for want of registers, which cost the varlen calls 10% once without changing a bit of the output."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest
import triton

ROOT = pathlib.Path(__file__).resolve().parents[1]
PTXAS = pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"


@pytest.mark.skipif(not PTXAS.exists(), reason="needs the ptxas that ships with Triton")
@pytest.mark.skipif(importlib.util.find_spec("triton.experimental.gluon") is None,
                    reason="the Gluon kernels need Triton >= 3.6")
def test_wgmma_products_not_serialized():
    # compiled for a GPU target, so outside the interpreter the CPU tests run under
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "compile_report.py"), "--check-wgmma"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
