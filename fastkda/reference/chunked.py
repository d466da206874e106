"""Chunked KDA reference (KDA.md section 2), in float64 by default.

Decay factors are formed pairwise as exp(gamma_i - gamma_j) with i >= j, so no factor exceeds 1 and no
gate value, however extreme, overflows. It is the algorithm the kernels implement, written for clarity.
"""

from __future__ import annotations

import torch

from fastkda.reference.common import run_reference


def chunk_step(S, q, k, v, a, beta, scale):
    """One chunk of C tokens for all heads. S [HV, K, V]; q, k, a [C, HV, K]; v [C, HV, V]; beta [C, HV].

    Returns (o [C, HV, V], S after the chunk)."""
    C = q.shape[0]
    gam = a.cumsum(0)                                              # [C, HV, K]
    diff = gam[:, None] - gam[None, :]                             # [C, C, HV, K]
    lower = torch.ones(C, C, dtype=torch.bool).tril()
    decay = torch.where(lower[:, :, None, None], diff, torch.full_like(diff, -float('inf'))).exp()
    Akk = torch.einsum('ihk,jhk,ijhk->hij', k, k, decay) * beta.T[:, :, None]
    Akk = Akk * (~torch.eye(C, dtype=torch.bool))                  # strictly lower
    Mqk = torch.einsum('ihk,jhk,ijhk->hij', q, k, decay)          # lower, diagonal included
    eye = torch.eye(C, dtype=q.dtype).expand_as(Akk)
    Tm = torch.linalg.solve_triangular(eye + Akk, eye, upper=False, unitriangular=True)
    W = torch.einsum('hij,jhk->ihk', Tm, k * gam.exp() * beta[:, :, None])
    U = torch.einsum('hij,jhv->ihv', Tm, v * beta[:, :, None])
    Vn = U - torch.einsum('ihk,hkv->ihv', W, S)
    o = scale * (torch.einsum('ihk,hkv->ihv', q * gam.exp(), S) + torch.einsum('hij,jhv->ihv', Mqk, Vn))
    G = gam[-1]                                                    # [HV, K]
    S = S * G.exp()[:, :, None] + torch.einsum('jhk,jhv->hkv', k * (G[None] - gam).exp(), Vn)
    return o, S


def kda_chunked_reference(q, k, v, g, beta, **kwargs):
    """Chunked form of the recurrence on the CPU. Arguments and returns: `run_reference`."""
    return run_reference(chunk_step, q, k, v, g, beta, **kwargs)
