"""Static SASS instruction count per source line of a compiled kernel (a cost map without a GPU).
Usage: python tools/sass_lines.py [prepare|state] [warps]"""

import collections
import os
import re
import subprocess
import sys
import tempfile

import triton

sys.path.insert(0, os.path.dirname(__file__))
import compile_report as cr  # noqa: E402


def line_counts(ck, src_name):
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        open(path, "wb").write(ck.asm["cubin"])
        out = subprocess.run([tool, "--print-line-info", path], capture_output=True, text=True).stdout
    counts, ops, cur = collections.Counter(), collections.defaultdict(collections.Counter), None
    for ln in out.splitlines():
        m = re.search(r'line (\d+)', ln)
        if "//## File" in ln and m:
            cur = int(m.group(1)) if src_name in ln else cur
            continue
        m2 = re.match(r'\s+/\*[0-9a-f]{4,}\*/\s+(@!?U?P\d+\s+)?([A-Z][A-Z0-9_.]+)', ln)
        if m2 and cur is not None:
            counts[cur] += 1
            ops[cur][m2.group(2).split('.')[0]] += 1
    return counts, ops


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "prepare"
    warps = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    ck, _ = cr.prepare_variant(warps=warps) if which == "prepare" else cr.state_variant(warps=warps)
    src = "chunk_prepare.py" if which == "prepare" else "chunk_state.py"
    counts, ops = line_counts(ck, src)
    lines = open(os.path.join(os.path.dirname(__file__), "..", "fastkda", "kernels", src)).read().splitlines()
    total = sum(counts.values())
    print("total", total)
    for ln, n in sorted(counts.items(), key=lambda x: -x[1])[:40]:
        print(f"{n:6d} {ln:4d} {lines[ln - 1].strip()[:80]:80s} {dict(ops[ln].most_common(4))}")
