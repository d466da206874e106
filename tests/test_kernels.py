"""The Triton forward against the float64 chunked reference, on fresh random inputs with NaN-poisoned outputs:
under the interpreter at small shapes on any machine, and on the GPU at full shapes (marker gpu). On an sm_90 GPU
K = 64 and 128 take the Gluon prepare kernel; the portable one is tested there as well."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import fastkda
import fastkda.forward as fwd
from kda_cases import Case, make_inputs, rel_err, run_case, with_

# RMS-relative error bounds per output. Random inputs: the forward issue's bar. Sweeps and extreme gates: 1e-2.
TOL_RANDOM = {"o": 5e-3, "final": 5e-3, "inter": 5e-3}
TOL_EXTREME = {"o": 1e-2, "final": 1e-2, "inter": 1e-2}
# The interpreter rounds like the GPU, but the small shapes see fewer tokens averaged per figure.
TOL_CPU = {"o": 7e-3, "final": 7e-3, "inter": 7e-3}


def check(errs: dict, tol: dict) -> None:
    for name, err in errs.items():
        if name == "inter_pad":
            assert err == 0.0, "intermediate-state slots past the real chunk count must be zero"
            continue
        assert err <= tol[name], f"{name}: RMS-relative error {err:.2e} > {tol[name]:.0e} ({errs})"


def assert_equal_under(args: dict, config: fwd.LaunchConfig, monkeypatch) -> None:
    """chunk_kda(**args) gives the same outputs, to the bit, with the default launch configuration and with config."""
    first = fastkda.chunk_kda(**args)
    monkeypatch.setattr(fwd, "DEFAULT_CONFIG", config)
    second = fastkda.chunk_kda(**args)
    for a, b in zip(first, second, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)


BASE = Case()
CPU_CASES = [
    BASE,
    with_(BASE, gate="softplus"),
    with_(BASE, gate="pre"),
    with_(BASE, gate="lb", lower_bound=-8.0),                    # outside [-5, 0): the general path
    with_(BASE, v_first=True, h0="bf16"),
    with_(BASE, H=2, HV=2),
    with_(BASE, K=128, V=64),
    with_(BASE, K=64, V=128, dtype="fp16"),
    with_(BASE, dtype="fp32", h0=None),
    with_(BASE, l2norm=False, beta_sigmoid=False),
    with_(BASE, T=1), with_(BASE, T=63), with_(BASE, T=64), with_(BASE, T=65), with_(BASE, T=200, B=2, intermediate=True),
    with_(BASE, T=200, seqlens=(70, 0, 64, 66), intermediate=True),
    with_(BASE, T=200, seqlens=(70, 0, 64, 66), intermediate=True, host_lengths=True, v_first=True),
    with_(BASE, T=200, split_size=64),
    with_(BASE, T=260, seqlens=(200, 0, 60), split_size=64, intermediate=True, gate="softplus"),
    with_(BASE, T=260, B=2, split_size=128, h0=None, intermediate=True),
    with_(BASE, strided=True),
    with_(BASE, T=130, B=2, misaligned=True),                    # the portable prepare kernel, v through pointers
    with_(BASE, collinear=True),
    with_(BASE, qk_rows="wide"),
    with_(BASE, gate="pre", g_fill="g=-1000"),
    with_(BASE, gate="softplus", g_fill="g=normal"),
    with_(BASE, gate="lb", g_fill="bias=-8"),
    with_(BASE, gate="lb", g_fill="g=8"),                         # every step at the bound: the widest factors
    # per 32-column slice, the 32-token diagonal blocks where they fit and the 16-token ones where they do not
    with_(BASE, K=128, V=64, gate="pre", g_fill="g=mixed"),
    # weak decay, so that a segment's state map P is far from zero and the split path has to apply it (with
    # the random gates above the state forgets its start within a few dozen tokens)
    with_(BASE, T=260, split_size=64, g_fill="bias=-8", h0="fp32"),
    with_(BASE, T=260, seqlens=(200, 0, 60), split_size=64, gate="softplus", g_fill="bias=-8", intermediate=True),
]


@pytest.mark.parametrize("case", CPU_CASES, ids=lambda c: c.id)
def test_forward_interpreter(case):
    if torch.cuda.is_available():
        pytest.skip("the interpreter cases run on CPU-only machines; the GPU runs test_forward_gpu")
    check(run_case(case, torch.device("cpu")), TOL_CPU)


# A transition that grows by 2^16 within a chunk (beta = 3 on collinear keys, no decay): the inverse's fp16
# products overflow and the chunk is solved again with tf32 products. The problem itself is ill-conditioned in
# bf16: 5.6e-2 under the interpreter (fp32 products, with or without the fp16 first solve) and 0.13 on an H100
# (tf32), hence the loose bound; without the second solve the output is inf.
GROWING = with_(BASE, T=100, gate="pre", g_fill="g=0", collinear=True, beta_sigmoid=False, beta_value=3.0)
TOL_GROWING = {"o": 0.3, "final": 0.3}


def test_inverse_overflow_interpreter():
    if torch.cuda.is_available():
        pytest.skip("the interpreter cases run on CPU-only machines; the GPU runs test_inverse_overflow_gpu")
    check(run_case(GROWING, torch.device("cpu")), TOL_GROWING)


@pytest.mark.gpu
def test_inverse_overflow_gpu():
    check(run_case(GROWING, torch.device("cuda")), TOL_GROWING)


G = Case(T=2048, H=4, HV=4, K=128, V=128)
GATE_SWEEP = [f"g={x}" for x in (-8, -4, 0, 8, "uniform", "normal")] + [f"bias={x}" for x in (-4, 4, -8, 8, "uniform", "normal")]
GPU_RANDOM = [
    with_(G, T=8192),
    with_(G, T=8192, gate="softplus"),
    with_(G, T=8192, gate="pre"),
    with_(G, T=4096, H=2, HV=4, v_first=True, h0="bf16", intermediate=True),
    with_(G, T=1000, B=3, dtype="fp16", l2norm=False, beta_sigmoid=False),
    with_(G, T=777, K=64, V=64, dtype="fp32", h0=None),
    with_(G, T=777, K=128, V=64, gate="softplus"),
    with_(G, T=4000, seqlens=(1300, 0, 547, 2048, 105), intermediate=True),
    with_(G, T=4000, seqlens=(1300, 0, 547, 2048, 105), intermediate=True, host_lengths=True, split_size=256),
    with_(G, T=8192, H=1, HV=2, split_size=1024, intermediate=True),
    with_(G, T=8192, H=1, HV=2, split_size=512, gate="softplus", v_first=True),
    with_(G, T=3000, seqlens=tuple([64] * 30 + [1080]), split_size=256),
    with_(G, T=1500, strided=True),
    with_(G, T=1000, dtype="fp32", gate="softplus"),
    with_(G, T=2000, gate="lb", lower_bound=-8.0),       # outside [-5, 0): the unbounded check
    with_(G, T=3000, K=64, V=128, gate="softplus", seqlens=(1000, 0, 1999, 1), intermediate=True),
    with_(G, T=2000, qk_rows="wide"),                    # l2norm on rows of any magnitude
    with_(G, T=2000, qk_rows="lead0"),
    with_(G, T=1000, K=64, V=64, gate="softplus", qk_rows="wide"),
    with_(G, T=1000, misaligned=True),                   # not int32 pairs, nor TMA tiles: portable prepare, v by pointers
    with_(G, T=2000, gate="pre", g_dtype="fp32"),        # fp32 log-decays with bf16 q and k (fla's usual g)
    with_(G, T=1000, K=64, V=64, gate="softplus", g_dtype="fp32"),
]
GPU_EXTREME = (
    [with_(G, gate="lb", g_fill=f) for f in GATE_SWEEP]
    + [with_(G, gate="softplus", g_fill=f) for f in GATE_SWEEP]
    + [with_(G, gate="pre", g_fill="g=-1000"), with_(G, gate="pre", g_fill="g=mixed"), with_(G, collinear=True),
       with_(G, gate="softplus", collinear=True)]
    + [with_(G, K=64, V=64, gate="lb", g_fill="g=8"), with_(G, K=64, V=64, gate="softplus", g_fill="bias=8"),
       with_(G, K=64, V=64, gate="pre", g_fill="g=mixed"), with_(G, K=64, V=64, collinear=True)]
)


@pytest.mark.gpu
@pytest.mark.parametrize("case", GPU_RANDOM, ids=lambda c: c.id)
def test_forward_gpu(case):
    check(run_case(case, torch.device("cuda")), TOL_RANDOM)


@pytest.mark.gpu
@pytest.mark.parametrize("case", GPU_EXTREME, ids=lambda c: c.id)
def test_forward_gpu_extreme(case):
    check(run_case(case, torch.device("cuda")), TOL_EXTREME)


# the cases of the sm_90 prepare kernel, through the portable prepare kernel
PORTABLE = GPU_RANDOM[:7] + [with_(G, gate="lb", g_fill="g=8"), with_(G, collinear=True)]


@pytest.mark.gpu
@pytest.mark.parametrize("case", PORTABLE, ids=lambda c: c.id)
def test_forward_gpu_portable_prepare(case, monkeypatch):
    monkeypatch.setattr(fwd, "DEFAULT_CONFIG", fwd.LaunchConfig(prepare_sm90=False))
    check(run_case(case, torch.device("cuda")), TOL_EXTREME if case.g_fill or case.collinear else TOL_RANDOM)


# the unsplit pass takes 32 state columns where the programs are few (forward.state_block_v), as in most cases here,
# and 64 with many heads: both widths on the same cases
@pytest.mark.parametrize("block_v", [32, 64])
@pytest.mark.parametrize("case", [with_(BASE, T=200, seqlens=(70, 0, 64, 66), intermediate=True, v_first=True),
                                  with_(BASE, T=130, B=2, K=64, V=64, gate="softplus")], ids=lambda c: c.id)
def test_state_widths_interpreter(case, block_v, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("the interpreter cases run on CPU-only machines")
    monkeypatch.setattr(fwd, "DEFAULT_CONFIG", fwd.LaunchConfig(block_v=block_v))
    check(run_case(case, torch.device("cpu")), TOL_CPU)


@pytest.mark.gpu
@pytest.mark.parametrize("block_v", [32, 64])
@pytest.mark.parametrize("case", [with_(G, T=3000, seqlens=(1000, 0, 1999, 1), intermediate=True, v_first=True),
                                  with_(G, T=2000, B=2, K=64, V=64, gate="softplus", strided=True)], ids=lambda c: c.id)
def test_state_widths_gpu(case, block_v, monkeypatch):
    monkeypatch.setattr(fwd, "DEFAULT_CONFIG", fwd.LaunchConfig(block_v=block_v))
    check(run_case(case, torch.device("cuda")), TOL_RANDOM)


@pytest.mark.gpu
@pytest.mark.parametrize("K", [64, 128])
def test_prepare_sm90_agrees_with_portable(K, monkeypatch):
    """Same math, different programs: on an sm_90 GPU the two prepare kernels give the same outputs up to the
    order of fp32 sums (and the selection picks the Gluon kernel there)."""
    dev = torch.device("cuda")
    if not fwd.is_sm90(torch.cuda.current_device()):
        pytest.skip("the Gluon prepare kernel runs on sm_90 only")
    args = make_inputs(with_(G, T=4000, K=K, seqlens=(1300, 0, 547, 2048, 105), intermediate=True), dev)
    picks = {name: fwd.prepare_kernel(dev, K, fwd.DEFAULT_CONFIG, xs).__name__ for name, xs in (
        ("bf16", (args["q"], args["k"], args["g"])), ("fp32 g", (args["q"], args["k"], args["g"].float())),
        ("odd start", (args["q"].flatten()[1:1 + args["q"].numel() - 1], args["k"], args["g"])))}
    assert picks == {"bf16": "kda_chunk_prepare_sm90_kernel", "fp32 g": "kda_chunk_prepare_sm90_kernel",
                     "odd start": "kda_chunk_prepare_kernel"}
    fast = fastkda.chunk_kda(**args)
    monkeypatch.setattr(fwd, "DEFAULT_CONFIG", fwd.LaunchConfig(prepare_sm90=False))
    portable = fastkda.chunk_kda(**args)
    for a, b in zip(fast, portable, strict=True):
        assert rel_err(a, b.double().cpu()) <= 1e-3


@pytest.mark.gpu
@pytest.mark.parametrize("split_size,g_fill", [(256, None), (1024, None), (1024, "bias=-8")])
def test_split_equals_unsplit_gpu(split_size, g_fill):
    """The split path agrees with the unsplit path and its error stays within 1.5x of the unsplit error;
    bias=-8: weak decay, so that the segment maps P matter."""
    case = with_(G, T=8192, H=2, HV=2, seqlens=(5000, 100, 3092), intermediate=True, host_lengths=True,
                 g_fill=g_fill)
    unsplit = run_case(with_(case, split_size=0), torch.device("cuda"))
    split = run_case(with_(case, split_size=split_size), torch.device("cuda"))
    for name in ("o", "final", "inter"):
        assert split[name] <= 1.5 * unsplit[name] + 1e-4, (name, split, unsplit)


@pytest.mark.gpu
@pytest.mark.parametrize("case,head,exclusive", [
    (with_(G, T=8192, H=2, HV=2, split_size=1024), 40, True),
    (with_(G, T=8000, H=2, HV=2, split_size=512, g_fill="bias=-8"), 40, False),   # a partial last chunk; P matters
    (with_(G, T=6000, K=64, V=64, dtype="fp16", v_first=True, h0="bf16", gate="softplus", g_fill="bias=-8",
           split_size=1024), 30, True),
    (with_(G, T=4096, H=2, HV=4, strided=True, h0=None, final=False, split_size=0), 20, False),  # GVA; rest unsplit
    (with_(G, T=5000, gate="pre", g_fill="g=-1000", split_size=256), 16, True),
], ids=lambda c: c.id if isinstance(c, Case) else str(c))
def test_split_head(case, head, exclusive, monkeypatch):
    """A single sequence's head walked beside the prepare kernel and the split passes (or the state kernel) on the
    rest (LaunchConfig.split_head): the float64 reference's bars, errors within 1.5x of the unsplit path's, and the
    same outputs to the bit without dependent launches (the rest's first reader of the head's state waits for it)."""
    dev = torch.device("cuda")
    if not fwd.is_sm90(torch.cuda.current_device()):
        pytest.skip("the head runs beside the prepare kernel on sm_90 only")
    launches = []
    real = fwd.launch_overlapped_state
    monkeypatch.setattr(fwd, "launch_overlapped_state", lambda *a, **kw: (launches.append(kw["NT"]), real(*a, **kw))[1])
    config = fwd.LaunchConfig(split_head=head, overlap_exclusive=exclusive)
    monkeypatch.setattr(fwd, "DEFAULT_CONFIG", config)
    errs = run_case(case, dev)
    assert launches == [head], "the case should take a head of the forced length"
    check(errs, TOL_RANDOM if case.g_fill is None else TOL_EXTREME)
    monkeypatch.setattr(fwd, "DEFAULT_CONFIG", fwd.LaunchConfig(split_head=0))
    unsplit = run_case(with_(case, split_size=0), dev)
    for name in errs:
        assert errs[name] <= 1.5 * unsplit[name] + 1e-4, (name, errs, unsplit)
    monkeypatch.setattr(fwd, "DEFAULT_CONFIG", config)
    assert_equal_under(make_inputs(case, dev), dataclasses.replace(config, pdl=False), monkeypatch)


@pytest.mark.gpu
@pytest.mark.parametrize("split_size", [0, 1024], ids=["unsplit", "split"])
def test_dependent_launches_change_nothing(split_size, monkeypatch):
    """Programmatic dependent launches (sm_90 and later) reorder nothing a kernel reads: the outputs equal those of
    plain launches to the bit, on varlen with empty sequences and an initial state (read before the wait)."""
    dev = torch.device("cuda")
    if not fwd.has_griddepcontrol(torch.cuda.current_device()):
        pytest.skip("programmatic dependent launch needs compute capability 9.0 or later")
    args = make_inputs(with_(G, T=8192, H=2, HV=2, seqlens=(5000, 0, 100, 3092), intermediate=True), dev)
    args["split_size"] = split_size
    assert_equal_under(args, fwd.LaunchConfig(pdl=False), monkeypatch)


@pytest.mark.gpu
@pytest.mark.parametrize("seqlens", [None, (5000, 0, 100, 3092)], ids=["fixed", "varlen"])
def test_dependent_prepare_launch_changes_nothing(seqlens, monkeypatch):
    """The prepare kernel beside the state kernel goes out as a dependent launch of the call's own kernel before it
    (the flags' zeroing, the varlen schedule): the outputs equal those of plain launches to the bit."""
    dev = torch.device("cuda")
    if not fwd.is_sm90(torch.cuda.current_device()):
        pytest.skip("the Gluon prepare kernel beside the state kernel runs on sm_90 only")
    monkeypatch.setattr(fwd, "DEFAULT_CONFIG", fwd.LaunchConfig(overlap=True))
    args = make_inputs(with_(G, T=8192, seqlens=seqlens), dev)
    assert_equal_under(args, fwd.LaunchConfig(overlap=True, pdl=False), monkeypatch)


@pytest.mark.gpu
@pytest.mark.parametrize("case", [
    with_(G, T=2000),                                                  # a partial last chunk
    with_(G, T=1024, B=2, K=64, V=64, dtype="fp16", v_first=True, h0="bf16"),
    with_(G, T=2048, K=128, V=64, h0=None, final=False),
    with_(G, T=2048, gate="lb", g_fill="g=8"),                         # every step at the bound
    with_(G, T=3000, H=2, HV=8, strided=True),                         # GVA; q, k, v, g as views
    with_(G, T=2048, gate="softplus"),                                 # unbounded: a few chunks take 16-token levels
    with_(G, T=2048, gate="softplus", g_fill="bias=8"),                # every chunk does
    with_(G, T=2000, K=64, V=64, gate="pre", g_fill="g=mixed"),
    with_(G, T=640, B=3, H=50, HV=50),                                 # 150 lanes: groups of 30, 5 chains a program
    with_(G, T=512, B=2, H=35, HV=70, K=64, V=64, v_first=True),       # GVA; 140 lanes of 1 program: groups of 28
    with_(G, T=4000, seqlens=(1300, 0, 547, 2048, 105)),               # varlen: a head's sequences in turn
    with_(G, T=3000, H=2, HV=8, K=64, V=128, seqlens=(0, 1000, 1999, 1), v_first=True, gate="softplus"),
    with_(G, T=3000, seqlens=tuple([64] * 30 + [1080])),
    with_(G, T=2000, H=2, HV=4, seqlens=(0, 0, 700, 0, 0, 1300, 0), h0="bf16"),   # empty walks in a row
], ids=lambda c: c.id)
@pytest.mark.parametrize("exclusive,narrow", [(False, False), (True, False), (True, True), (False, True)],
                         ids=["shared", "whole", "narrow-whole", "narrow-shared"])
def test_overlapped_state_kernel_equals_plain(case, exclusive, narrow, monkeypatch):
    """The state kernel run beside the prepare kernel (sm_90: a second stream, ready flags read 16 at a time) gives
    the plain path's outputs to the bit, and the float64 reference's bars, with its programs sharing their
    multiprocessors with prepare programs or taking whole ones, and taking 64 state columns (transposed) or 32."""
    dev = torch.device("cuda")
    if not fwd.is_sm90(torch.cuda.current_device()):
        pytest.skip("the overlapped state kernel runs on sm_90 only")
    launches = []
    real = fwd.launch_overlapped_state
    monkeypatch.setattr(fwd, "launch_overlapped_state", lambda *a, **kw: (launches.append(1), real(*a, **kw))[1])
    # forced: at these lengths the chain is long against the prepare kernel, where the default keeps it after it
    monkeypatch.setattr(fwd, "DEFAULT_CONFIG", fwd.LaunchConfig(overlap=True, overlap_exclusive=exclusive,
                                                                overlap_narrow=narrow))
    check(run_case(case, dev), TOL_RANDOM if case.g_fill is None else TOL_EXTREME)
    assert launches, "the case should take the overlapped path"
    assert_equal_under(make_inputs(case, dev), fwd.LaunchConfig(overlap=False), monkeypatch)


@pytest.mark.gpu
@pytest.mark.parametrize("choice,seqlens", [
    ("late_slices_at_start", None), ("late_slices_at_start", (700, 0, 1284, 64)),
    ("host_slots_pay", (700, 0, 1284, 64)),
], ids=["late-slices-fixed", "late-slices-varlen", "host-slots-varlen"])
def test_group_choices_change_nothing(choice, seqlens, monkeypatch):
    """Two launch-time choices taken where shared state programs walk two groups or more change no output bit, each
    against the same call without it: slices 2 and 3 requested at the prepare program's start
    (forward.late_slices_at_start), and a varlen call's exact chunk count (cu_seqlens_cpu) as its slots instead of
    the bound ceil(T / 64) + N - 1 (forward.host_slots_pay)."""
    dev = torch.device("cuda")
    if not fwd.is_sm90(torch.cuda.current_device()):
        pytest.skip("the Gluon prepare kernel beside the state kernel runs on sm_90 only")
    taken = []
    real = getattr(fwd, choice)
    monkeypatch.setattr(fwd, choice, lambda *a, **kw: taken.append(real(*a, **kw)) or taken[-1])
    monkeypatch.setattr(fwd, "DEFAULT_CONFIG", fwd.LaunchConfig(overlap=True, overlap_exclusive=False,
                                                                overlap_narrow=False))
    args = make_inputs(with_(G, T=2048, H=80, HV=80, seqlens=seqlens, host_lengths=seqlens is not None), dev)
    first = fastkda.chunk_kda(**args)
    assert taken and all(taken), "80 lanes take two groups or more of shared programs"
    monkeypatch.setattr(fwd, choice, lambda *a, **kw: False)
    second = fastkda.chunk_kda(**args)
    for a, b in zip(first, second, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.gpu
@pytest.mark.parametrize("case", [
    with_(G, T=8192, H=1, HV=2, split_size=1024, intermediate=True),
    with_(G, T=2000, split_size=256),                                              # a partial last chunk
    with_(G, T=4000, seqlens=(1300, 0, 547, 2048, 105), split_size=256),           # varlen: ragged, empty
    with_(G, T=3000, seqlens=tuple([64] * 30 + [1080]), split_size=256),
    with_(G, T=4096, B=2, K=64, V=64, dtype="fp16", v_first=True, h0="bf16", split_size=512),
    with_(G, T=3000, K=128, V=64, gate="softplus", g_fill="bias=-8", split_size=512),     # P far from zero
    with_(G, T=3000, H=2, HV=8, K=64, V=128, strided=True, split_size=1024),       # GVA; q, k, v, g as views
], ids=lambda c: c.id)
def test_transition_sm90_equals_triton(case, monkeypatch):
    """The split path's transition pass in the Gluon kernel (sm_90, the state transposed) gives the Triton kernel's
    segment maps to the bit, so the same outputs, and the float64 reference's bars."""
    dev = torch.device("cuda")
    if not fwd.is_sm90(torch.cuda.current_device()):
        pytest.skip("the Gluon transition pass runs on sm_90 only")
    taken = []
    real = fwd.transition_sm90
    monkeypatch.setattr(fwd, "transition_sm90", lambda *a: taken.append(real(*a)) or taken[-1])
    check(run_case(case, dev), TOL_RANDOM if case.g_fill is None else TOL_EXTREME)
    assert any(taken), "the case should take the Gluon transition pass"
    assert_equal_under(make_inputs(case, dev), fwd.LaunchConfig(transition_sm90=False), monkeypatch)


@pytest.mark.gpu
@pytest.mark.parametrize("overlap,split_size", [(True, 0), (False, 0), (False, 1024)],
                         ids=["overlapped", "sequential", "split"])
def test_malformed_device_cu_seqlens_stays_in_bounds(overlap, split_size, monkeypatch):
    """A device cu_seqlens that decreases (the host cannot check it without a sync) asks for more chunks than the
    workspace has slots: the call returns (no fault, and no state program waits on a flag that no prepare program
    sets), and the first sequence comes out as in a well-formed call: its final state, and its rows that the
    malformed third sequence, which overlaps it, does not cover."""
    dev = torch.device("cuda")
    monkeypatch.setattr(fwd, "DEFAULT_CONFIG", fwd.LaunchConfig(overlap=overlap))
    args = make_inputs(with_(G, T=4096, seqlens=(2500, 1596), split_size=split_size), dev)
    good = fastkda.chunk_kda(**args)
    h0 = args["initial_state"]
    # sequences [0, 2500), [2500, 2500) and [1000, 4096): 40 + 0 + 49 chunks, 66 slots
    args.update(cu_seqlens=torch.tensor([0, 2500, 1000, 4096], dtype=torch.int32, device=dev),
                initial_state=torch.cat([h0, h0[-1:]]))
    bad = fastkda.chunk_kda(**args)
    torch.cuda.synchronize()
    assert torch.equal(bad[1][0], good[1][0])
    assert torch.equal(bad[0][:, :960], good[0][:, :960])      # the third sequence's first tile starts at row 1000


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_varlen_schedule(device):
    """The varlen schedule over more sequences and chunk slots than one block of the kernel (1024), with empty
    sequences, including at both ends: prefix sums, the first token row and the sequence's end of every chunk slot
    (an empty range past the last chunk), the list of sequences of more than one segment, and the words it zeroes
    besides (the overlapped call's ready flags), more than a block of them."""
    if device == "cpu" and torch.cuda.is_available():
        pytest.skip("the interpreter cases run on CPU-only machines")
    from fastkda.kernels.split import kda_schedule_kernel

    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(0, 400, (2500,), generator=gen) * (torch.rand(2500, generator=gen) > 0.3)
    lengths[0] = lengths[-1] = 0
    cu = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]).to(torch.int32)
    N, T, ncs = len(lengths), int(cu[-1]), 4
    chunks = (lengths + 63) // 64
    n_slots = T // 64 + 1 + N - 1
    n_long = n_slots // (ncs + 1)
    seg, off, rows, long_seqs = (torch.full((n,), -7, dtype=torch.int32, device=device)
                                 for n in (N + 1, N + 1, 2 * n_slots, n_long + 1))
    zeroed = torch.full((2500,), -7, dtype=torch.int32, device=device)
    kda_schedule_kernel[(1,)](cu.to(device), seg, off, rows, long_seqs, N, T, ncs, n_slots, n_long, BLOCK=1024,
                              zeroed=zeroed[:2499], NZERO=2499)
    assert bool((zeroed[:2499] == 0).all()) and int(zeroed[2499]) == -7
    exp_off = torch.cat([torch.zeros(1, dtype=torch.int64), chunks.cumsum(0)])
    exp_seg = torch.cat([torch.zeros(1, dtype=torch.int64), ((chunks + ncs - 1) // ncs).clamp_min(1).cumsum(0)])
    assert torch.equal(off.cpu().long(), exp_off) and torch.equal(seg.cpu().long(), exp_seg)
    exp_seq = torch.repeat_interleave(torch.arange(N), chunks)
    total = int(exp_off[-1])
    first, end = rows.cpu().long().view(n_slots, 2).unbind(1)
    exp_first = cu.long()[exp_seq] + 64 * (torch.arange(total) - exp_off[exp_seq])
    assert total > 1024 and torch.equal(first[:total], exp_first) and torch.equal(end[:total], cu.long()[exp_seq + 1])
    assert n_slots > total and bool((first[total:] >= end[total:]).all())
    exp_long = torch.nonzero(chunks > ncs).flatten()          # the combine's sequences: more than one segment
    assert len(exp_long) <= n_long and exp_long[-1] > 1024 and int(long_seqs[-1]) == len(exp_long)
    assert torch.equal(long_seqs.cpu()[:len(exp_long)].long(), exp_long)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("B,seqlens", [(2, None), (1, (0, 0, 0))], ids=["fixed-B2", "varlen-all-empty"])
def test_no_tokens_keep_the_initial_state(device, B, seqlens):
    """Zero tokens (the workspace then has no chunk slot, and v no rows for a tensor descriptor): an empty output,
    and the final state equal to the initial one."""
    if device == "cpu" and torch.cuda.is_available():
        pytest.skip("the interpreter cases run on CPU-only machines")
    dev = torch.device(device)
    H, K, V = 2, 128, 64
    x = [torch.randn(B, 0, H, d, device=dev, dtype=torch.bfloat16) for d in (K, K, V, K)]
    cu = None if seqlens is None else torch.zeros(len(seqlens) + 1, dtype=torch.int32, device=dev)
    h0 = torch.randn(B if seqlens is None else len(seqlens), H, K, V, device=dev)
    o, ht = fastkda.chunk_kda(*x, torch.rand(B, 0, H, device=dev, dtype=torch.bfloat16), initial_state=h0,
                              output_final_state=True, cu_seqlens=cu, use_qk_l2norm_in_kernel=True)
    assert o.shape == (B, 0, H, V) and torch.equal(ht, h0)
