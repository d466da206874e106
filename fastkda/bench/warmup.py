"""Parallel compilation before the timed runs.

A first run on a machine spends most of its time compiling, not timing: fla autotunes each of its kernels over
dozens of launch configurations, compiling every one, once per head count (more than a minute per case on an
H100 host, one CPU core at a time). Here worker processes compile those kernels into Triton's on-disk cache in
parallel first: each takes a share of every autotuner's configurations and runs each of them once, untimed,
with fla's own caching of autotuning results turned off. The timing process then autotunes exactly as on any
first run (every configuration timed, the same choice made) but loads the compiled kernels from the cache.
No measured figure changes: the workers have exited before the first timing.

Worker command (run by `compile_in_parallel`): python -m fastkda.bench.warmup CASE SHARE SHARES BASELINES
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

MAX_PROCESSES = 16  # each holds a CUDA context and one case's inputs and buffers
MAX_SHARES = 4      # processes per case


def plan_shares(n_cases: int, cpus: int) -> int:
    """Processes per case: the CPU cores spread over the cases, at least one."""
    return max(1, min(MAX_SHARES, min(cpus, MAX_PROCESSES) // max(n_cases, 1)))


def share_of(configs: list, share: int, shares: int) -> list:
    """The configurations worker `share` of `shares` compiles (each compiled by exactly one worker); a worker
    left without any compiles the first, so that its call can still run."""
    return configs[share::shares] or configs[:1]


def worker_commands(case_names: list[str], baselines: tuple[str, ...], cpus: int) -> list[list[str]]:
    shares = plan_shares(len(case_names), cpus)
    return [[sys.executable, "-m", "fastkda.bench.warmup", name, str(i), str(shares), ",".join(baselines) or "-"]
            for name in case_names for i in range(shares)]


def compile_in_parallel(case_names: list[str], baselines: tuple[str, ...], cpus: int | None = None,
                        timeout_s: float = 900.0) -> dict:
    """Runs the workers, at most MAX_PROCESSES at a time; returns {"seconds", "processes", "failed"}.
    baselines: those asked for (each worker runs those it can import). A failed worker costs nothing but
    time: the timing process compiles what it left out."""
    began = time.perf_counter()
    commands = worker_commands(case_names, baselines, cpus or os.cpu_count() or 1)
    env = dict(os.environ, FLA_CACHE_RESULTS="0")  # the workers' autotuning choices are not real: keep them out
    pending, running, failed = list(commands), [], 0
    while pending or running:
        while pending and len(running) < MAX_PROCESSES:
            running.append(subprocess.Popen(pending.pop(0), env=env, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))
        time.sleep(0.2)
        for p in [p for p in running if p.poll() is not None]:
            failed += p.returncode != 0
            running.remove(p)
        if time.perf_counter() - began > timeout_s:
            for p in running:
                p.kill()
            failed += len(running) + len(pending)
            break
    return dict(seconds=time.perf_counter() - began, processes=len(commands), failed=failed)


class CompileInBackground:
    """Starts the workers at once (the timing process meanwhile imports what it needs); wait() returns
    compile_in_parallel's summary once they have all exited."""

    def __init__(self, case_names: list[str], baselines: tuple[str, ...]):
        self._summary: dict = {}
        self._thread = threading.Thread(target=lambda: self._summary.update(compile_in_parallel(case_names, baselines)),
                                        daemon=True)
        self._thread.start()

    def wait(self) -> dict:
        self._thread.join()
        return self._summary


def compile_only_autotuning(share: int, shares: int) -> None:
    """Makes every Triton autotuner in this process compile and run its share of the configurations once,
    untimed, and pick any of them."""
    from triton.runtime.autotuner import Autotuner

    prune = Autotuner.prune_configs
    Autotuner.prune_configs = lambda self, kwargs: share_of(prune(self, kwargs), share, shares)
    Autotuner.do_bench = property(lambda self: _run_once)


def _run_once(kernel_call, quantiles):
    kernel_call()
    return [1.0] * len(quantiles)


def run_worker(case_name: str, share: int, shares: int, baselines: tuple[str, ...]) -> None:
    import torch

    from fastkda.bench.cases import CASES
    from fastkda.bench.harness import available_baselines, backends_for, make_inputs

    compile_only_autotuning(share, shares)
    case = CASES[case_name]
    with torch.inference_mode():
        runners = backends_for(case, make_inputs(case, torch.device("cuda")), baselines, available_baselines())
        for name, fn in runners.items():
            if share == 0 or name == "fla":  # only fla's kernels are autotuned: the others compile once
                fn()
        torch.cuda.synchronize()


if __name__ == "__main__":
    name, share, shares, backends = sys.argv[1:5]
    run_worker(name, int(share), int(shares), tuple(b for b in backends.split(",") if b != "-"))
