"""Stall samples and executed instructions of an Nsight Compute source page (--page source --csv
--print-source sass) per source line, from the profiled cubin's line table.
Usage: python tools/ncu_lines.py SASS.csv[.gz] KERNEL.cubin [TOP]"""

import collections
import csv
import gzip
import os
import re
import subprocess
import sys

import triton


def line_table(cubin):
    """[(file, line)] per instruction, in address order."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")
    out = subprocess.run([tool, "-c", "--print-line-info", cubin], capture_output=True, text=True).stdout
    seq, cur = [], (None, None)
    for ln in out.splitlines():
        m = re.search(r'//## File "([^"]+)", line (\d+)', ln)
        if m:
            cur = (os.path.basename(m.group(1)), int(m.group(2)))
        elif re.match(r'\s+/\*[0-9a-f]{4,}\*/\s', ln):
            seq.append(cur)
    return seq


def main():
    path = sys.argv[1]
    rows = list(csv.reader(gzip.open(path, "rt") if path.endswith(".gz") else open(path)))
    hdr, data = rows[1], rows[2:]
    seq = line_table(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    col = {h: i for i, h in enumerate(hdr)}
    stalls = [h for h in hdr if h.startswith("stall_") and "Not Issued" not in h]
    agg = collections.defaultdict(collections.Counter)
    for loc, r in zip(seq, data, strict=False):
        agg[loc]["samples"] += int(r[col["Warp Stall Sampling (All Samples)"]] or 0)
        agg[loc]["inst"] += int(r[col["Instructions Executed"]] or 0)
        for s in stalls:
            agg[loc][s] += int(r[col[s]] or 0)
    total = sum(a["samples"] for a in agg.values())
    inst = sum(a["inst"] for a in agg.values())
    print(f"{len(seq)} instructions in the cubin, {len(data)} rows; {total} samples, {inst / 1e6:.1f} M warp instructions")
    srcs = {}
    for (f, ln), a in sorted(agg.items(), key=lambda x: -x[1]["samples"])[:top]:
        path = os.path.join(os.path.dirname(__file__), "..", "fastkda", "kernels", f or "")
        if f and f not in srcs and os.path.exists(path):
            srcs[f] = open(path).read().splitlines()
        text = srcs[f][ln - 1].strip()[:58] if f in srcs else ""
        why = ", ".join(f"{k[6:]} {v / a['samples'] * 100:.0f}%" for k, v in a.most_common() if k.startswith("stall_"))
        print(f"{a['samples'] / total * 100:5.1f}% {a['inst'] / inst * 100:5.1f}%i {f}:{ln} {text:58s} {why[:60]}")


if __name__ == "__main__":
    main()
