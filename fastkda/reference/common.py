"""Input preparation shared by the two pure-PyTorch references."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastkda.reference.gates import beta_activation, kda_gate, l2norm


@dataclass
class Prepared:
    """Inputs after the in-kernel preprocessing, flattened to one token axis and cast to `dtype`.

    q, k: [L, HV, K] (query/key heads repeated to the value heads); v: [L, HV, V];
    a: [L, HV, K] log-decay; beta: [L, HV]; bounds: (token offset in the flat axis, length) per sequence.
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    a: torch.Tensor
    beta: torch.Tensor
    bounds: list[tuple[int, int]]
    scale: float
    h0: torch.Tensor  # [N, HV, K, V], always K-first, in `dtype`


def sequence_bounds(B: int, T: int, cu_seqlens: torch.Tensor | None) -> list[tuple[int, int]]:
    if cu_seqlens is None:
        return [(b * T, T) for b in range(B)]
    cu = [int(x) for x in cu_seqlens.tolist()]
    return [(cu[i], cu[i + 1] - cu[i]) for i in range(len(cu) - 1)]


def prepare(
    q, k, v, g, beta, *, scale, initial_state, use_qk_l2norm_in_kernel, use_gate_in_kernel,
    use_beta_sigmoid_in_kernel, allow_neg_eigval, lower_bound, A_log, dt_bias, state_v_first,
    cu_seqlens, dtype,
) -> Prepared:
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    group = HV // H
    cast = lambda x: x.to(dtype).reshape(B * T, *x.shape[2:])  # noqa: E731
    q, k, v, g, beta = map(cast, (q, k, v, g, beta))
    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q), l2norm(k)
    q = q.repeat_interleave(group, dim=1)
    k = k.repeat_interleave(group, dim=1)
    if use_gate_in_kernel:
        a = kda_gate(g, A_log=None if A_log is None else A_log.to(dtype),
                     dt_bias=None if dt_bias is None else dt_bias.to(dtype), lower_bound=lower_bound)
    else:
        a = g
    beta = beta_activation(beta, use_beta_sigmoid_in_kernel, allow_neg_eigval)
    bounds = sequence_bounds(B, T, cu_seqlens)
    N = len(bounds)
    if initial_state is None:
        h0 = torch.zeros(N, HV, K, V, dtype=dtype)
    else:
        h0 = initial_state.to(device="cpu", dtype=dtype)
        if state_v_first:
            h0 = h0.transpose(-1, -2)
    return Prepared(q.cpu(), k.cpu(), v.cpu(), a.cpu(), beta.cpu(), bounds,
                    K ** -0.5 if scale is None else float(scale), h0.contiguous())


def finish_state(S: torch.Tensor, state_v_first: bool) -> torch.Tensor:
    """A K-first state [..., K, V] in the requested layout."""
    return S.transpose(-1, -2).contiguous() if state_v_first else S


def run_reference(chunk_fn, q, k, v, g, beta, *, scale=None, initial_state=None, output_final_state=False,
                  use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False, use_beta_sigmoid_in_kernel=False,
                  allow_neg_eigval=False, lower_bound=None, A_log=None, dt_bias=None, state_v_first=False,
                  cu_seqlens=None, return_intermediate_states=False, chunk_size=64, dtype=torch.float64):
    """Drives a per-chunk step `chunk_fn(S, q, k, v, a, beta, scale) -> (o, S)` over every sequence.

    Shapes as `fastkda.chunk_kda`: q, k [B, T, H, K]; v [B, T, HV, V]; g [B, T, HV, K]; beta [B, T, HV].
    Returns (o [B, T, HV, V], final_state [N, HV, K, V] or None, h or None), all in `dtype` on the CPU;
    h [B, NT, HV, K, V] ([1, total chunks, ...] with cu_seqlens) holds the state before each
    `chunk_size`-token chunk of each sequence, as fla lays it out.
    """
    B, T = q.shape[:2]
    HV, V = v.shape[2], v.shape[3]
    p = prepare(q, k, v, g, beta, scale=scale, initial_state=initial_state,
                use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, use_gate_in_kernel=use_gate_in_kernel,
                use_beta_sigmoid_in_kernel=use_beta_sigmoid_in_kernel, allow_neg_eigval=allow_neg_eigval,
                lower_bound=lower_bound, A_log=A_log, dt_bias=dt_bias, state_v_first=state_v_first,
                cu_seqlens=cu_seqlens, dtype=dtype)
    o = torch.zeros(B * T, HV, V, dtype=dtype)
    finals, inter = [], []
    for n, (off, L) in enumerate(p.bounds):
        S = p.h0[n].clone()
        for s in range(off, off + L, chunk_size):
            e = min(s + chunk_size, off + L)
            inter.append(S.clone())
            o[s:e], S = chunk_fn(S, p.q[s:e], p.k[s:e], p.v[s:e], p.a[s:e], p.beta[s:e], p.scale)
        finals.append(S)
    o = o.reshape(B, T, HV, V)
    final = finish_state(torch.stack(finals), state_v_first) if output_final_state else None
    h = None
    if return_intermediate_states:
        h = torch.stack(inter) if inter else p.h0.new_zeros(0, *p.h0.shape[1:])
        h = finish_state(h, state_v_first)
        h = h.reshape(B, -1, *h.shape[1:]) if cu_seqlens is None else h.unsqueeze(0)
    return o, final, h
