"""Benchmark harness: identical inputs for every backend, median CUDA-event timings with the L2 cache flushed
before each call (and the host's launch time kept out of them), a device-to-device copy for the bandwidth
ceiling, and an output cross-check."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

import fastkda
from fastkda.bench.cases import BenchCase

LOWER_BOUND = -5.0
CROSS_CHECK_LIMIT = 1e-2
STATE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def make_inputs(case: BenchCase, device, seed: int = 0) -> dict:
    """Random raw inputs of a case (the gate and beta as logits, q and k unnormalized), bf16."""
    gen = torch.Generator(device=device).manual_seed(seed)  # drawn where they are used: large cases in seconds
    H, HV, K, V = case.H, case.value_heads, case.K, case.V
    B, T = (1, case.tokens) if case.seqlens else (case.B, case.T)
    N = len(case.seqlens) if case.seqlens else B

    def rnd(*shape, scale=1.0, dtype=torch.bfloat16):
        return (scale * torch.randn(*shape, generator=gen, device=device)).to(dtype)

    inp = dict(q=rnd(B, T, H, K), k=rnd(B, T, H, K), v=rnd(B, T, HV, V), g=rnd(B, T, HV, K), beta=rnd(B, T, HV),
               A_log=torch.rand(HV, generator=gen, device=device),
               dt_bias=torch.rand(HV * K, generator=gen, device=device),
               h0=rnd(N, HV, K, V, scale=0.1, dtype=STATE_DTYPES[case.state_dtype]), cu_seqlens=None,
               cu_seqlens_cpu=None)
    if case.seqlens:
        cu = torch.tensor([0, *torch.tensor(case.seqlens).cumsum(0).tolist()], dtype=torch.int64)
        inp.update(cu_seqlens=cu.to(device), cu_seqlens_cpu=cu)
    return inp


def _gate_kwargs(case: BenchCase) -> dict:
    if case.gate == "lb":
        return dict(use_gate_in_kernel=True, safe_gate=True, lower_bound=LOWER_BOUND)
    return dict(use_gate_in_kernel=True)


def run_fastkda_with_state(case: BenchCase, inp: dict, **overrides):
    """(o, final state) of fastkda.chunk_kda on a case's inputs with the benchmark's flags."""
    return fastkda.chunk_kda(
        inp["q"], inp["k"], inp["v"], inp["g"], inp["beta"], initial_state=inp["h0"], output_final_state=True,
        use_qk_l2norm_in_kernel=True, use_beta_sigmoid_in_kernel=True, A_log=inp["A_log"], dt_bias=inp["dt_bias"],
        cu_seqlens=inp["cu_seqlens"], cu_seqlens_cpu=inp["cu_seqlens_cpu"], **_gate_kwargs(case), **overrides)


def run_fastkda(case: BenchCase, inp: dict, **overrides):
    return run_fastkda_with_state(case, inp, **overrides)[0]


def run_fla(case: BenchCase, inp: dict):
    from fla.ops.kda import chunk_kda
    return chunk_kda(
        inp["q"], inp["k"], inp["v"], inp["g"], inp["beta"], initial_state=inp["h0"].float(), output_final_state=True,
        use_qk_l2norm_in_kernel=True, use_beta_sigmoid_in_kernel=True, A_log=inp["A_log"], dt_bias=inp["dt_bias"],
        cu_seqlens=inp["cu_seqlens"], cu_seqlens_cpu=inp["cu_seqlens_cpu"], **_gate_kwargs(case))[0]


def flash_kda_supports(case: BenchCase) -> bool:
    return case.gate == "lb" and case.K == case.V == 128 and case.value_heads == case.H


def run_flash_kda(case: BenchCase, inp: dict, _cache: dict = {}):  # noqa: B006 (buffers reused across calls)
    import flash_kda
    key = id(inp)
    if key not in _cache:
        _cache.clear()
        h0 = inp["h0"].transpose(-1, -2).contiguous()  # FlashKDA keeps states [N, H, V, K]
        _cache[key] = (torch.empty_like(inp["v"]), h0, torch.empty_like(h0))
    out, h0, ht = _cache[key]
    flash_kda.fwd(inp["q"], inp["k"], inp["v"], inp["g"], inp["beta"], case.K ** -0.5, out, inp["A_log"],
                  inp["dt_bias"].view(case.value_heads, case.K), LOWER_BOUND, initial_state=h0, final_state=ht,
                  cu_seqlens=inp["cu_seqlens"])
    return out


def available_baselines() -> dict:
    found = {}
    for name, module in (("fla", "fla"), ("flash_kda", "flash_kda")):
        try:
            importlib.import_module(module)
            found[name] = True
        except Exception:  # noqa: BLE001 (any import failure means the baseline is absent)
            found[name] = False
    return found


class L2Flush:
    """Writes a buffer larger than the L2 cache before each timed call."""

    def __init__(self, device, nbytes: int = 256 << 20):
        self.buf = torch.empty(nbytes, dtype=torch.uint8, device=device)

    def __call__(self):
        self.buf.zero_()


LEAD_CYCLES = 10_000_000  # about 5 ms of GPU idling before each timed call


def time_ms(fn, flush: L2Flush, warmup: int, reps: int, host_ms: list | None = None) -> list[float]:
    """CUDA-event times of fn in ms. Before each call the L2 cache is flushed and the GPU then idles for
    LEAD_CYCLES, so that the host has queued the whole call before the start event runs: the time is the GPU's
    whatever the host's launch cost (fla's is above 1 ms a call). host_ms, if given, receives the host's time
    per call."""
    for _ in range(warmup):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for s, e in zip(starts, ends, strict=True):
        flush()
        torch.cuda._sleep(LEAD_CYCLES)
        s.record()
        began = time.perf_counter()
        fn()
        if host_ms is not None:
            host_ms.append(1e3 * (time.perf_counter() - began))
        e.record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in zip(starts, ends, strict=True)]


def copy_bandwidth_gbs(device, nbytes: int = 1 << 30, reps: int = 20) -> float:
    """Device-to-device copy bandwidth, counting bytes read plus bytes written."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    times = time_ms(lambda: dst.copy_(src), L2Flush(device), warmup=3, reps=reps)
    return 2 * nbytes / statistics.median(times) / 1e6


def io_bytes(case: BenchCase) -> int:
    """Raw I/O of the call: q, k, v, g, beta read, o written, initial state read and final state written."""
    L, H, HV, K, V = case.tokens, case.H, case.value_heads, case.K, case.V
    N = len(case.seqlens) if case.seqlens else case.B
    state = N * HV * K * V * (4 if case.state_dtype == "fp32" else 2)
    return 2 * L * (2 * H * K + HV * V + HV * K + HV + HV * V) + 2 * state


def rel_diff(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.float(), ref.float()
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def environment() -> dict:
    def version(pkg):
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    env = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda,
               triton=version("triton"), fla=version("flash-linear-attention"), flash_kda=version("flash_kda"),
               fastkda=fastkda.__version__, commit=os.environ.get("FASTKDA_COMMIT"))
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, sm_count=props.multi_processor_count)
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=10).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    return env


def progress(i: int, n: int, label: str) -> None:
    width = 24
    done = int(width * i / max(n, 1))
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {i}/{n} {label:<48}")
    if i == n:
        sys.stderr.write("\n")
    sys.stderr.flush()


def backends_for(case: BenchCase, inp: dict, baselines: tuple[str, ...], found: dict) -> dict:
    """name -> a call of that backend on the case's inputs, fastkda first."""
    runners = {"fastkda": lambda: run_fastkda(case, inp)}
    if "fla" in baselines and found["fla"]:
        runners["fla"] = lambda: run_fla(case, inp)
    if "flash_kda" in baselines and found["flash_kda"] and flash_kda_supports(case):
        runners["flash_kda"] = lambda: run_flash_kda(case, inp)
    return runners


def run_cases(cases: list[BenchCase], warmup: int = 3, reps: int = 20,
              baselines: tuple[str, ...] = ("fla", "flash_kda"), compiling=None) -> dict:
    """Times every case on every available backend; returns the JSON-ready result. compiling: a
    fastkda.bench.warmup.CompileInBackground of these cases, waited for before the first timing."""
    began = time.perf_counter()
    device = torch.device("cuda")
    found = available_baselines()
    compiled = compiling.wait() if compiling is not None else None
    flush = L2Flush(device)
    bw = copy_bandwidth_gbs(device)
    rows = []
    total = len(cases) * (1 + len(baselines))
    done = 0
    for case in cases:
        row = dict(case=case.name, tokens=case.tokens, H=case.H, HV=case.value_heads, K=case.K, V=case.V,
                   gate=case.gate, state_dtype=case.state_dtype, seqlens=list(case.seqlens) if case.seqlens else None,
                   B=case.B, io_bytes=io_bytes(case), floor_ms=io_bytes(case) / bw / 1e6, results={})
        with torch.inference_mode():
            runners = backends_for(case, make_inputs(case, device), baselines, found)
            first_call_s, first_out = {}, {}
            progress(done, total, f"{case.name} first calls")
            for name, fn in runners.items():  # compilation and autotuning, all before the first timing
                start = time.perf_counter()
                first_out[name] = fn()
                torch.cuda.synchronize()
                first_call_s[name] = time.perf_counter() - start
            done += 1 + len(baselines) - len(runners)  # baselines not available
            for name, fn in runners.items():
                progress(done, total, f"{case.name} {name}")
                done += 1
                start = time.perf_counter()
                host = []
                times = time_ms(fn, flush, warmup, reps, host)
                entry = dict(ms=statistics.median(times), ms_min=min(times), ms_max=max(times),
                             host_ms=statistics.median(host), wall_s=first_call_s[name] + time.perf_counter() - start)
                if name != "fastkda":
                    entry["rel_diff_vs_fastkda"] = rel_diff(first_out["fastkda"], first_out[name])
                    entry["flagged"] = entry["rel_diff_vs_fastkda"] > CROSS_CHECK_LIMIT
                row["results"][name] = entry
        fk = row["results"]["fastkda"]["ms"]
        row["bandwidth_fraction"] = row["floor_ms"] / fk
        for name, entry in row["results"].items():
            if name != "fastkda":
                entry["speedup_of_fastkda"] = entry["ms"] / fk
        rows.append(row)
        torch.cuda.empty_cache()
    progress(total, total, "done")
    return dict(environment=environment(), copy_bandwidth_gbs=bw, warmup=warmup, reps=reps, cases=rows,
                parallel_compile=compiled, wall_s=time.perf_counter() - began)
