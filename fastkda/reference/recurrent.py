"""Token-by-token KDA reference (KDA.md section 1), in float64 by default."""

from __future__ import annotations

import torch

from fastkda.reference.common import run_reference


def token_steps(S, q, k, v, a, beta, scale):
    """Tokens one at a time. S [HV, K, V]; q, k, a [L, HV, K]; v [L, HV, V]; beta [L, HV]."""
    o = torch.empty_like(v)
    for t in range(q.shape[0]):
        S = S * a[t].exp()[:, :, None]
        pred = torch.einsum('hk,hkv->hv', k[t], S)
        S = S + beta[t][:, None, None] * k[t][:, :, None] * (v[t] - pred)[:, None, :]
        o[t] = scale * torch.einsum('hk,hkv->hv', q[t], S)
    return o, S


def kda_recurrent_reference(q, k, v, g, beta, **kwargs):
    """Runs the recurrence one token at a time on the CPU. Arguments and returns: `run_reference`."""
    return run_reference(token_steps, q, k, v, g, beta, **kwargs)
