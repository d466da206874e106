"""Times launch configurations and split sizes of the forward on the GPU (for choosing the defaults) and fla on
the same inputs. Writes JSON. Usage: python tools/gpu_sweep.py OUT.json [--fla CASE,...] [--config-cases CASE,...]
[--configs "block_v=128,num_warps=8;prepare_sm90=0"] (LaunchConfig fields; default: CONFIGS below)"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from fastkda.bench.cases import CASES
from fastkda.bench.harness import L2Flush, copy_bandwidth_gbs, environment, make_inputs, rel_diff, run_fastkda, run_fla, time_ms
from fastkda.forward import LaunchConfig

CONFIGS = [LaunchConfig(), LaunchConfig(block_v=64), LaunchConfig(block_v=32), LaunchConfig(num_stages=2), LaunchConfig(prepare_slice=64)]
SPLITS = [None, 0, 1024, 2048, 4096, 8192]


def parse_configs(spec: str) -> list[LaunchConfig]:
    """"a=1,b=2;c=3" -> [LaunchConfig(a=1, b=2), LaunchConfig(c=3)]; values are integers (0/1 for flags), an empty
    part is the default configuration."""
    return [LaunchConfig(**{k: int(v) for k, v in (kv.split("=") for kv in part.split(",") if kv)})
            for part in spec.split(";")]


def kernel_times(fn, reps=5):
    """Mean device time per call of each kernel, in ms (torch profiler)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    out = {}
    for ev in prof.key_averages():
        t = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
        if t > 0:
            out[ev.key[:40]] = round(t / reps / 1000, 4)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--config-cases", default="T8192-H96,T8192-H32")
    p.add_argument("--split-cases", default="T65536-H4,T32768-H8,T8192-H12")
    p.add_argument("--configs", default="", help="LaunchConfig fields, ';' between configurations")
    p.add_argument("--config-split", type=int, default=None, help="split size for the config sweep (None: planned)")
    p.add_argument("--fla", default="")
    p.add_argument("--profile", default="")
    p.add_argument("--reps", type=int, default=10)
    a = p.parse_args()
    dev = torch.device("cuda")
    flush = L2Flush(dev)
    res = dict(environment=environment(), copy_bandwidth_gbs=copy_bandwidth_gbs(dev), configs={}, splits={}, fla={})
    import fastkda.forward as fwd
    orig = fwd.kda_forward

    def with_config(cfg):
        def f(*args, **kw):
            kw["config"] = cfg
            return orig(*args, **kw)
        return f

    with torch.inference_mode():
        for name in [c for c in a.config_cases.split(",") if c]:
            case = CASES[name]
            inp = make_inputs(case, dev)
            ref = None
            for cfg in parse_configs(a.configs) if a.configs else CONFIGS:
                fwd.kda_forward = with_config(cfg)
                import fastkda.op as op
                op.kda_forward = fwd.kda_forward
                key = (f"{name} bv{cfg.block_v or 'auto'} w{cfg.num_warps} s{cfg.num_stages} pw{cfg.prepare_warps}"
                       f" ks{cfg.prepare_slice} sm90{int(cfg.prepare_sm90)} pdl{int(cfg.pdl)}")
                try:
                    t0 = time.time()
                    out = run_fastkda(case, inp, split_size=a.config_split)
                    torch.cuda.synchronize()
                    compile_s = time.time() - t0
                    ref = out if ref is None else ref
                    ms = statistics.median(time_ms(lambda: run_fastkda(case, inp, split_size=a.config_split), flush, 2, a.reps))
                    res["configs"][key] = dict(ms=ms, first_call_s=compile_s, diff_vs_first=rel_diff(out, ref),
                                               kernels=kernel_times(lambda: run_fastkda(case, inp, split_size=a.config_split)))
                except Exception as e:  # noqa: BLE001
                    res["configs"][key] = dict(error=repr(e)[:500])
                print(key, res["configs"][key], flush=True)
            fwd.kda_forward = orig
            import fastkda.op as op
            op.kda_forward = orig
        for name in [c for c in a.profile.split(",") if c]:
            case = CASES[name]
            inp = make_inputs(case, dev)
            run_fastkda(case, inp)
            res.setdefault("profile", {})[name] = kernel_times(lambda: run_fastkda(case, inp))
            print(name, res["profile"][name], flush=True)
        for name in [c for c in a.split_cases.split(",") if c]:
            case = CASES[name]
            inp = make_inputs(case, dev)
            ref = run_fastkda(case, inp, split_size=0)
            for sp in SPLITS:
                key = f"{name} split{sp}"
                try:
                    out = run_fastkda(case, inp, split_size=sp)
                    ms = statistics.median(time_ms(lambda: run_fastkda(case, inp, split_size=sp), flush, 2, a.reps))
                    res["splits"][key] = dict(ms=ms, diff_vs_unsplit=rel_diff(out, ref),
                                              kernels=kernel_times(lambda: run_fastkda(case, inp, split_size=sp)))
                except Exception as e:  # noqa: BLE001
                    res["splits"][key] = dict(error=repr(e)[:500])
                print(key, res["splits"][key], flush=True)
        for name in [c for c in a.fla.split(",") if c]:
            case = CASES[name]
            inp = make_inputs(case, dev)
            t0 = time.time()
            out = run_fla(case, inp)
            torch.cuda.synchronize()
            first = time.time() - t0
            ms = statistics.median(time_ms(lambda: run_fla(case, inp), flush, 2, a.reps))
            fk = statistics.median(time_ms(lambda: run_fastkda(case, inp), flush, 2, a.reps))
            res["fla"][name] = dict(fla_ms=ms, fastkda_ms=fk, first_call_s=first,
                                    diff=rel_diff(run_fastkda(case, inp), out))
            print(name, res["fla"][name], flush=True)
            json.dump(res, open(a.out, "w"), indent=1)
    json.dump(res, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    sys.exit(main())
