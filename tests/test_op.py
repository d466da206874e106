"""The forward as a custom operator: opcheck, torch.compile with fullgraph=True, CUDA-graph capture."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import fastkda
import fastkda.forward as fwd
from fastkda.api import normalize_call
from kda_cases import Case, make_inputs, rel_err


def small_args(device, **kw):
    return make_inputs(Case(T=100, H=1, HV=2, K=64, V=64, seqlens=kw.pop("seqlens", None), intermediate=True, **kw),
                       torch.device(device))


def op_args(args):
    names = ("q", "k", "v", "g", "beta", "scale", "initial_state", "output_final_state", "use_qk_l2norm_in_kernel",
             "use_gate_in_kernel", "use_beta_sigmoid_in_kernel", "allow_neg_eigval", "safe_gate", "lower_bound",
             "return_intermediate_states", "state_v_first", "cu_seqlens", "cu_seqlens_cpu", "cp_context", "A_log",
             "dt_bias", "split_size")
    return normalize_call(*(args.get(n) for n in names), {})


@pytest.mark.parametrize("seqlens", [None, (40, 0, 60)], ids=["fixed", "varlen"])
def test_opcheck_cpu_reference_path(monkeypatch, seqlens):
    monkeypatch.setenv("TRITON_INTERPRET", "0")   # CPU tensors take the reference path
    args = small_args("cpu", seqlens=seqlens, host_lengths=seqlens is not None)
    torch.library.opcheck(torch.ops.fastkda.chunk_kda_fwd.default, op_args(args),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))


def test_compile_fullgraph_cpu(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    args = small_args("cpu")

    def f(q, k, v, g, beta, h0, A_log, dt_bias):
        o, ht = fastkda.chunk_kda(q, k, v, g, beta, initial_state=h0, output_final_state=True,
                                  use_qk_l2norm_in_kernel=True, use_gate_in_kernel=True, use_beta_sigmoid_in_kernel=True,
                                  lower_bound=-5.0, A_log=A_log, dt_bias=dt_bias)
        return o.float().sum(-1), ht

    inputs = [args[n] for n in ("q", "k", "v", "g", "beta", "initial_state", "A_log", "dt_bias")]
    eager = f(*inputs)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")(*inputs)
    for a, b in zip(eager, compiled, strict=True):
        assert torch.allclose(a, b)


@pytest.mark.gpu
def test_opcheck_gpu():
    args = small_args("cuda", seqlens=(40, 0, 60))
    torch.library.opcheck(torch.ops.fastkda.chunk_kda_fwd.default, op_args(args),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))


@pytest.mark.gpu
def test_compile_fullgraph_gpu():
    args = make_inputs(Case(T=1000, H=2, HV=4, K=128, V=128), torch.device("cuda"))

    def f(q, k, v, g, beta, h0, A_log, dt_bias):
        return fastkda.chunk_kda(q, k, v, g, beta, initial_state=h0, output_final_state=True,
                                 use_qk_l2norm_in_kernel=True, use_gate_in_kernel=True,
                                 use_beta_sigmoid_in_kernel=True, lower_bound=-5.0, A_log=A_log, dt_bias=dt_bias)

    inputs = [args[n] for n in ("q", "k", "v", "g", "beta", "initial_state", "A_log", "dt_bias")]
    eager = f(*inputs)
    compiled = torch.compile(f, fullgraph=True)(*inputs)
    assert rel_err(compiled[0], eager[0].double().cpu()) < 1e-6
    assert rel_err(compiled[1], eager[1].double().cpu()) < 1e-6


@pytest.mark.gpu
@pytest.mark.parametrize("seqlens,config", [
    (None, fwd.LaunchConfig()), ((700, 0, 300, 2100), fwd.LaunchConfig()), (None, fwd.LaunchConfig(overlap=True)),
    (None, fwd.LaunchConfig(split_head=20))], ids=["fixed", "varlen", "overlapped", "head"])
def test_cuda_graph_replay_matches_eager(seqlens, config, monkeypatch):
    """overlapped: the state kernel on a second stream beside the prepare kernel (sm_90), captured with it; head: a
    head of 20 chunks beside the prepare kernel, the rest split after it (split_size 512)."""
    monkeypatch.setattr(fwd, "DEFAULT_CONFIG", config)
    plain = config == fwd.LaunchConfig()
    case = Case(T=3100, H=2, HV=4, K=128, V=128, seqlens=seqlens, intermediate=plain,
                split_size=512 if config.split_head else 0)
    args = make_inputs(case, torch.device("cuda"))
    eager = fastkda.chunk_kda(**args)
    static = {n: (x.clone() if isinstance(x, torch.Tensor) else x) for n, x in args.items()}
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fastkda.chunk_kda(**static)            # warm-up (compilation) outside the capture
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fastkda.chunk_kda(**static)
    fresh = make_inputs(replace(case, seed=1), torch.device("cuda"))
    for n, x in fresh.items():
        if isinstance(x, torch.Tensor) and n not in ("cu_seqlens", "cu_seqlens_cpu"):
            static[n].copy_(x)
    graph.replay()
    want = fastkda.chunk_kda(**fresh)
    for a, b in zip(out, want, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(out[0], eager[0])


def test_one_host_known_sequence_takes_the_fixed_length_path():
    """cu_seqlens of one sequence over all of q, known on the host, is the fixed-length call with B = 1 (whose planner
    can give the sequence a head beside the prepare kernel); several sequences stay varlen."""
    assert op_args(small_args("cpu", seqlens=(100,), host_lengths=True))[8] is None
    assert op_args(small_args("cpu", seqlens=(40, 60), host_lengths=True))[8] is not None


def test_eager_calls_skip_the_operator_unless_autograd_records(monkeypatch):
    """Without an autograd graph to record and outside torch.compile, chunk_kda runs the forward directly (the
    operator's dispatch cost 0.1-0.2 ms of host time a call); with an input that requires grad it goes through the
    operator, whose backward raises. Same outputs either way."""
    import fastkda.api as api
    args = small_args("cpu")
    args.pop("return_intermediate_states", None)
    through = []
    monkeypatch.setattr(api, "chunk_kda_fwd", lambda *a: through.append(1) or torch.ops.fastkda.chunk_kda_fwd(*a))
    direct = fastkda.chunk_kda(**args)
    assert not through
    args["A_log"] = torch.nn.Parameter(args["A_log"], requires_grad=False)     # a model's parameters: still direct
    fastkda.chunk_kda(**args)
    assert not through
    args["q"] = args["q"].clone().requires_grad_(True)
    recorded = fastkda.chunk_kda(**args)
    assert through
    with torch.no_grad():
        fastkda.chunk_kda(**args)
    assert len(through) == 1
    for a, b in zip(direct, recorded, strict=True):
        assert torch.equal(a, b.detach())
    meta = {n: x.to("meta") if isinstance(x, torch.Tensor) and n != "cu_seqlens_cpu" else x for n, x in args.items()}
    with torch.no_grad():
        o, ht = fastkda.chunk_kda(**meta)   # shapes from the operator's fake implementation
    assert o.device.type == "meta" and o.shape == direct[0].shape and ht.shape == direct[1].shape


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("case", [
    Case(T=4096, H=4, HV=4, K=128, V=128, split_size=None),      # planned: the overlapped state kernel (side stream)
    Case(T=8192, H=2, HV=2, K=128, V=128, split_size=None),      # planned: the split passes
    Case(T=16384, H=8, HV=8, K=128, V=128, split_size=None),     # planned: a head, the rest split
    Case(T=1000, H=2, HV=4, seqlens=(300, 0, 700), host_lengths=True, split_size=128),
    Case(T=256, H=2, HV=2, intermediate=True),
], ids=["overlapped", "split", "head", "varlen-split", "intermediate"])
def test_inputs_on_a_device_other_than_the_current(case):
    """Triton launches on the current device: a model spread over several GPUs in one process (the current device
    the first) calls each layer with its own device's tensors. The same outputs on either device."""
    with torch.cuda.device(0):
        on0 = fastkda.chunk_kda(**make_inputs(case, torch.device("cuda:0")))
        on1 = fastkda.chunk_kda(**make_inputs(case, torch.device("cuda:1")))
        torch.cuda.synchronize(1)
    for a, b in zip(on0, on1, strict=True):
        assert b.device == torch.device("cuda:1")
        assert torch.equal(a.cpu(), b.cpu())


@pytest.mark.gpu
@pytest.mark.parametrize("case,where", [
    (Case(T=4096, H=4, HV=4, K=128, V=128, split_size=None), "device"),         # the overlapped state kernel
    (Case(T=8192, H=2, HV=2, K=128, V=128, split_size=None), "device"),         # the split passes
    (Case(T=16384, H=8, HV=8, K=128, V=128, split_size=None), "device"),        # a head, the rest split
    (Case(T=1000, H=2, HV=4, seqlens=(300, 0, 700), host_lengths=True, split_size=None), "device"),
    (Case(T=1000, H=2, HV=4, seqlens=(300, 0, 700), split_size=128), "device"),
    (Case(T=1000, H=2, HV=4, seqlens=(300, 0, 700), split_size=None), "host"),  # cu_seqlens given on the CPU
    (Case(T=256, H=2, HV=2, intermediate=True, seqlens=(56, 200)), "device"),
], ids=["overlapped", "split", "head", "varlen-host-lengths", "varlen-split", "varlen-cpu-offsets", "intermediate"])
def test_no_host_synchronization(case, where):
    """The forward never waits for the GPU: under torch's synchronization debug mode set to error, a call raises
    at any operation that would (a copy to or from pageable memory that waits, .item(), ...)."""
    args = make_inputs(case, torch.device("cuda"))
    if where == "host":
        args["cu_seqlens"] = args["cu_seqlens"].cpu()
    want = fastkda.chunk_kda(**args)            # compiled first
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = fastkda.chunk_kda(**args)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for a, b in zip(want, got, strict=True):
        assert torch.equal(a, b)
