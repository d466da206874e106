"""A FlashKDA-compatible entry point: `fastkda.fwd` takes the arguments of `flash_kda.fwd` and writes into
the caller's buffers.

FlashKDA's contract (KDA.md section 4): bf16 q, k, v, g [B, T, H, K]; beta logits [B, T, H]; the
lower-bounded gate lower_bound * sigmoid(exp(A_log) * (g + dt_bias)) computed in the kernel, with q and k
l2-normalized and beta passed through a sigmoid; states [N, H, V, K] in bf16 or fp32; cu_seqlens int64
(int32 accepted too). fastkda also serves what FlashKDA refuses: head dims 64 and 128, value heads that are
a multiple of the query heads (GVA), fp16 inputs.
"""

from __future__ import annotations

import torch

from fastkda.api import normalize_call
from fastkda.op import run_forward
from fastkda.validation import check_tensor


def _check_buffer(name: str, buf, shape: tuple, dtypes: tuple, device) -> None:
    check_tensor(name, buf, len(shape), str(list(shape)))
    if tuple(buf.shape) != tuple(shape) or buf.dtype not in dtypes or buf.device != device or not buf.is_contiguous():
        names = " or ".join(str(d).replace("torch.", "") for d in dtypes)
        raise ValueError(f"{name}: expected a contiguous {names} tensor of shape {tuple(shape)} on {device}, "
                         f"got {buf.dtype} {tuple(buf.shape)} on {buf.device}"
                         f"{'' if buf.is_contiguous() else ' (not contiguous)'}")


def fwd(q, k, v, g, beta, scale, out, A_log, dt_bias, lower_bound, initial_state=None, final_state=None,
        cu_seqlens=None) -> None:
    """Forward into preallocated buffers, with FlashKDA's signature and flags (module docstring).

    q, k [B, T, H, K]; v, g: [B, T, HV, V], [B, T, HV, K]; beta: logits [B, T, HV]; out: [B, T, HV, V] in the dtype
    of q; A_log [HV]; dt_bias [HV, K]; initial_state, final_state: [N, HV, V, K], bf16 or fp32 (final_state is
    written when given); cu_seqlens: [N + 1] int64 or int32. Returns None."""
    args = normalize_call(
        q, k, v, g, beta, scale, initial_state, final_state is not None, True, True, True, False, True, lower_bound,
        False, True, cu_seqlens, None, None, A_log, None if dt_bias is None else dt_bias.reshape(-1), None, {})
    _check_buffer("out", out, tuple(v.shape), (q.dtype,), q.device)
    if final_state is not None:
        N = q.shape[0] if cu_seqlens is None else cu_seqlens.shape[0] - 1
        _check_buffer("final_state", final_state, (N, v.shape[2], v.shape[3], q.shape[3]),
                      (torch.float32, torch.bfloat16), q.device)
    run_forward(*args, out=out, final_out=final_state)
