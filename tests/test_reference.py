"""The two float64 references agree with each other (and the gate functions with their closed forms)."""

from __future__ import annotations

import math

import pytest
import torch

from fastkda.reference import beta_activation, kda_chunked_reference, kda_gate, kda_recurrent_reference, l2norm

GATES = {
    "lb": dict(use_gate_in_kernel=True, lower_bound=-5.0),
    "lb-noA": dict(use_gate_in_kernel=True, lower_bound=-3.0, no_A=True),
    "softplus": dict(use_gate_in_kernel=True),
    "pre": dict(),
}


def make(T, H=2, m=1, K=16, V=8, B=1, gate="lb", seqlens=None, v_first=False, l2=True, sig=True, h0=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    HV = H * m
    if seqlens is not None:
        B, T = 1, sum(seqlens)
    rnd = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    q, k, v = rnd(B, T, H, K), rnd(B, T, H, K), rnd(B, T, HV, V)
    if not l2:
        q, k = l2norm(q), l2norm(k)
    g = rnd(B, T, HV, K)
    opts = dict(GATES[gate])
    no_A = opts.pop("no_A", False)
    if gate == "pre":
        g = -torch.nn.functional.softplus(g)
    args = dict(q=q, k=k, v=v, g=g, beta=rnd(B, T, HV) if sig else torch.rand(B, T, HV, generator=gen, dtype=torch.float64),
                use_qk_l2norm_in_kernel=l2, use_beta_sigmoid_in_kernel=sig, output_final_state=True,
                return_intermediate_states=True, state_v_first=v_first, **opts)
    if gate != "pre":
        args.update(A_log=None if no_A else torch.rand(HV, generator=gen, dtype=torch.float64),
                    dt_bias=torch.rand(HV * K, generator=gen, dtype=torch.float64))
    N = B
    if seqlens is not None:
        args["cu_seqlens"] = torch.tensor([0, *torch.tensor(seqlens).cumsum(0).tolist()])
        N = len(seqlens)
    if h0:
        args["initial_state"] = 0.1 * rnd(N, HV, *((V, K) if v_first else (K, V)))
    return args


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


CASES = (
    [pytest.param(dict(T=T), id=f"T{T}") for T in (1, 63, 64, 65, 200)]
    + [pytest.param(dict(T=130, gate=gt), id=f"gate-{gt}") for gt in GATES]
    + [pytest.param(dict(T=130, m=2), id="gva2"), pytest.param(dict(T=130, v_first=True), id="v-first"),
       pytest.param(dict(T=130, l2=False, sig=False), id="no-l2-raw-beta"), pytest.param(dict(T=70, h0=False), id="no-h0"),
       pytest.param(dict(T=0, seqlens=(70, 0, 64, 1, 65)), id="varlen-with-empty"),
       pytest.param(dict(T=0, seqlens=(0, 130), m=2, gate="softplus", v_first=True), id="varlen-gva-softplus-vfirst"),
       pytest.param(dict(T=100, B=3, gate="pre"), id="batch3-pregated")]
)


@pytest.mark.parametrize("spec", CASES)
def test_recurrent_matches_chunked(spec):
    args = make(**spec)
    o1, f1, h1 = kda_recurrent_reference(**args)
    o2, f2, h2 = kda_chunked_reference(**args)
    assert rel(o2, o1) <= 1e-10
    assert rel(f2, f1) <= 1e-10
    assert h1.shape == h2.shape and (h1.numel() == 0 or rel(h2, h1) <= 1e-10)


def test_chunked_reference_with_other_chunk_sizes():
    args = make(T=100)
    ref = kda_recurrent_reference(**args)
    for C in (16, 32):
        o, f, _ = kda_chunked_reference(**args, chunk_size=C)
        assert rel(o, ref[0]) <= 1e-10 and rel(f, ref[1]) <= 1e-10


def test_empty_sequence_keeps_initial_state():
    args = make(T=0, seqlens=(5, 0, 7))
    _, final, _ = kda_chunked_reference(**args)
    assert torch.equal(final[1], args["initial_state"][1])


def test_intermediate_states_layout():
    args = make(T=130, B=2, seqlens=None)
    _, _, h = kda_chunked_reference(**args)
    assert h.shape == (2, 3, 2, 16, 8)
    assert torch.equal(h[:, 0], args["initial_state"])
    args = make(T=0, seqlens=(70, 0, 64))
    _, _, h = kda_chunked_reference(**args)
    assert h.shape == (1, 3, 2, 16, 8)          # ceil(70/64) + 0 + 1 chunks
    assert torch.equal(h[0, 2], args["initial_state"][2])


def test_extreme_gates_stay_finite():
    args = make(T=130, gate="pre")
    args["g"] = torch.full_like(args["g"], -1000.0)
    o, f, _ = kda_chunked_reference(**args)
    assert torch.isfinite(o).all() and torch.isfinite(f).all()
    assert rel(o, kda_recurrent_reference(**args)[0]) <= 1e-10


def test_gate_closed_forms():
    gen = torch.Generator().manual_seed(1)
    g = torch.randn(5, 3, 4, generator=gen, dtype=torch.float64) * 4
    A = torch.rand(3, generator=gen, dtype=torch.float64)
    b = torch.randn(3 * 4, generator=gen, dtype=torch.float64)
    x = g + b.view(3, 4)
    soft = -A.exp().view(3, 1) * torch.log1p(torch.exp(x))
    assert torch.allclose(kda_gate(g, A, b), soft, rtol=1e-12, atol=1e-12)
    lb = -5.0 / (1 + torch.exp(-A.exp().view(3, 1) * x))
    assert torch.allclose(kda_gate(g, A, b, lower_bound=-5.0), lb, rtol=1e-12, atol=1e-12)
    assert torch.allclose(kda_gate(g, None, b, lower_bound=-2.0), -2.0 / (1 + torch.exp(-x)), rtol=1e-12)
    assert (kda_gate(g, None, None, lower_bound=-5.0) >= -5.0).all()
    with pytest.raises(ValueError, match="A_log"):
        kda_gate(g, None, b)


def test_beta_and_l2norm_closed_forms():
    b = torch.tensor([-3.0, 0.0, 2.0], dtype=torch.float64)
    assert torch.allclose(beta_activation(b, True), 1 / (1 + torch.exp(-b)))
    assert torch.allclose(beta_activation(b, True, allow_neg_eigval=True), 2 / (1 + torch.exp(-b)))
    assert torch.equal(beta_activation(b, False), b)
    x = torch.randn(4, 16, dtype=torch.float64)
    n = l2norm(x)
    assert torch.allclose(n.norm(dim=-1), (x.norm(dim=-1) ** 2 / (x.norm(dim=-1) ** 2 + 1e-6)).sqrt())
    assert math.isclose(l2norm(torch.zeros(3, dtype=torch.float64)).abs().sum().item(), 0.0)
