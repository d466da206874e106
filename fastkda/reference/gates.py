"""Closed forms of the per-token preprocessing that KDA applies before the recurrence.

These are the definitions the kernels implement; the references and the tests use them directly.
All functions compute in the dtype of their input (float64 for the references).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

L2NORM_EPS = 1e-6


def l2norm(x: torch.Tensor, eps: float = L2NORM_EPS) -> torch.Tensor:
    """x * rsqrt(sum(x^2) + eps) over the last dimension."""
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


def kda_gate(
    g: torch.Tensor,
    A_log: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    lower_bound: float | None = None,
) -> torch.Tensor:
    """Log-decay a (natural-log units, a <= 0) from the raw gate input g of shape [..., HV, K].

    - lower_bound set:  a = lower_bound * sigmoid(exp(A_log) * (g + dt_bias)); without A_log the
      factor exp(A_log) is 1.
    - lower_bound None: a = -exp(A_log) * softplus(g + dt_bias)  (A_log required).
    A_log has HV elements; dt_bias has HV * K elements (optional).
    """
    HV, K = g.shape[-2:]
    x = g
    if dt_bias is not None:
        x = x + dt_bias.reshape(HV, K).to(g.dtype)
    if lower_bound is not None:
        if A_log is not None:
            x = A_log.reshape(HV, 1).to(g.dtype).exp() * x
        return lower_bound * torch.sigmoid(x)
    if A_log is None:
        raise ValueError("kda_gate: the softplus gate needs A_log")
    return -A_log.reshape(HV, 1).to(g.dtype).exp() * F.softplus(x)


def beta_activation(beta: torch.Tensor, use_sigmoid: bool, allow_neg_eigval: bool = False) -> torch.Tensor:
    """beta as used by the recurrence: sigmoid of logits (times 2 with allow_neg_eigval), or as given."""
    if not use_sigmoid:
        return beta
    return torch.sigmoid(beta) * (2.0 if allow_neg_eigval else 1.0)
