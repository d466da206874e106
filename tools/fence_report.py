"""Which global loads and stores a fence waits for, found without a GPU. On sm_90 the fence before a product whose
operands the threads wrote to shared memory compiles to MEMBAR.ALL.CTA, which waits for every global load and store
the thread has in flight: a load issued a few instructions before a fence has its whole latency exposed there
(docs/perf-notes.md, v15). For each synchronous global access (LDG, STG; not the asynchronous copies of Triton's
pipeline) this lists how many instructions run before the next fence and, for a load, before the first instruction
that reads what it loaded (following a loop's back edge once), with the source line; the smaller of the two is the
work that can hide the access's latency. A "use" is any instruction that reads the register, including the
unpacking (PRMT) that ptxas emits for a bf16 tile carried to the next loop iteration. Usage:
python tools/fence_report.py [MAX_DISTANCE]"""

from __future__ import annotations

import functools
import os
import re
import sys

sys.path.insert(0, os.path.dirname(__file__))
import compile_report as cr  # noqa: E402

KERNELS = os.path.join(os.path.dirname(__file__), "..", "fastkda", "kernels")


@functools.cache
def source_lines(name: str) -> list[str]:
    path = os.path.join(KERNELS, name)
    return open(path).read().splitlines() if os.path.exists(path) else []


def loaded_registers(op, args):
    """The registers an LDG writes (R4 and a .64 or .128 width: R4-R5 or R4-R7)."""
    m = re.match(r"\s*R(\d+)", args)
    if not op.startswith("LDG") or not m:
        return set()
    width = 4 if ".128" in op else 2 if ".64" in op else 1
    return {f"R{int(m.group(1)) + w}" for w in range(width)}


def fence_distances(insns, labels):
    """For each LDG/STG: instructions executed until the next MEMBAR and, for a load, until the first instruction
    that reads a register it wrote, taking a backward branch (a loop) back to its target once; None where the
    program exits first."""
    index = {a: i for i, (a, *_rest) in enumerate(insns)}
    rows = []
    for i, (addr, op, args, src) in enumerate(insns):
        if not (op.startswith("LDG.") or op == "LDG" or op.startswith("STG")):
            continue
        regs = loaded_registers(op, args)
        j, steps, wrapped, to_fence, to_use = i + 1, 0, False, None, None
        while j < len(insns) and insns[j][1] != "EXIT" and (to_fence is None or (regs and to_use is None)):
            op_j, args_j = insns[j][1], insns[j][2]
            if op_j.startswith("MEMBAR") and to_fence is None:
                to_fence = steps
            sources = set(re.findall(r"\bR\d+\b", args_j.split(",", 1)[-1] if "," in args_j else ""))
            if to_use is None and regs & sources:
                to_use = steps
            target = cr.BRANCH_TARGET.search(args_j) if op_j == "BRA" else None
            if target and not wrapped and labels.get(target.group(1), 1 << 60) <= addr:
                j, wrapped = index[labels[target.group(1)]], True
            else:
                j += 1
            steps += 1
        rows.append((addr, op, src, to_fence, to_use))
    return rows


def report(title, ck, max_distance):
    insns, labels = cr.sass_instructions(ck)
    print(f"== {title}: {len(insns)} instructions, {sum(op.startswith('MEMBAR') for _, op, *_ in insns)} fences")
    for addr, op, src, to_fence, to_use in fence_distances(insns, labels):
        dist = min(d for d in (to_fence, to_use, 1 << 30) if d is not None)
        if dist <= max_distance:
            where = f"{src[0]}:{src[1]}" if src else "?"
            text = source_lines(src[0]) if src else []
            line = text[src[1] - 1].strip()[:70] if src and src[1] <= len(text) else ""
            print(f"  {addr:05x} {op:16s} fence {to_fence if to_fence is not None else '-':>5} use "
                  f"{to_use if to_use is not None else '-':>5}  {where:24s} {line}")


if __name__ == "__main__":
    max_distance = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    for title, (ck, _) in (
        ("prepare sm_90, lower-bounded", cr.prepare_variant(sm90=True)),
        ("prepare sm_90, softplus", cr.prepare_variant(sm90=True, bounded=False)),
        ("prepare portable, lower-bounded", cr.prepare_variant(warps=4)),
        ("state, output pass", cr.state_variant(bv=64, warps=4, stages=3)),
        ("state, transition pass", cr.state_variant(bv=64, warps=4, stages=2, transition=True)),
    ):
        report(title, ck, max_distance)
