"""Argument checks of the public entry points. Every failure names the argument, what was expected and
what came. Checks read only shapes, dtypes and devices, except the content checks of cu_seqlens, which run
only on host data (cu_seqlens on the CPU, or cu_seqlens_cpu), so no check waits for the GPU."""

from __future__ import annotations

import torch

from fastkda.kernels.chunk_prepare import CHUNK
from fastkda.kernels.common import BOUNDED_STEP

SUPPORTED_HEAD_DIMS = (64, 128)
INPUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
STATE_DTYPES = (torch.float32, torch.bfloat16)
SAFE_LOWER_BOUND = (-BOUNDED_STEP, 0.0)
HOST_LIST_SEQUENCES = 512   # cu_seqlens's content checked as a list up to this many sequences


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def check_tensor(name: str, x, ndim: int, layout: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape {layout}, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions {layout}, got shape {tuple(x.shape)}")


def check_dtype(name: str, x: torch.Tensor, allowed) -> None:
    if x.dtype not in allowed:
        names = ", ".join(_dtype_name(d) for d in allowed)
        raise TypeError(f"{name}: expected dtype {names}, got {_dtype_name(x.dtype)}")


def check_shape(name: str, x: torch.Tensor, expected: tuple[int, ...], layout: str) -> None:
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"{name}: expected shape {layout} = {tuple(expected)}, got {tuple(x.shape)}")


def check_device(name: str, x: torch.Tensor, device: torch.device) -> None:
    if x.device != device:
        raise ValueError(f"{name}: expected a tensor on {device} (the device of q), got one on {x.device}")


def check_inputs(q, k, v, g, beta) -> tuple[int, int, int, int, int, int]:
    """Ranks, shapes, dtypes, head dims and devices of q, k, v, g, beta. Returns (B, T, H, K, HV, V)."""
    check_tensor("q", q, 4, "[B, T, H, K]")
    check_tensor("k", k, 4, "[B, T, H, K]")
    check_tensor("v", v, 4, "[B, T, HV, V]")
    check_tensor("g", g, 4, "[B, T, HV, K]")
    check_tensor("beta", beta, 3, "[B, T, HV]")
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    check_shape("k", k, (B, T, H, K), "[B, T, H, K] like q")
    if tuple(v.shape[:2]) != (B, T):
        raise ValueError(f"v: expected shape [B, T, HV, V] with B, T = {B}, {T} as in q, got {tuple(v.shape)}")
    check_shape("g", g, (B, T, HV, K), "[B, T, HV, K]")
    check_shape("beta", beta, (B, T, HV), "[B, T, HV]")
    for name, x in (("q", q), ("k", k), ("v", v), ("g", g), ("beta", beta)):
        check_dtype(name, x, INPUT_DTYPES)
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"k, v: expected the dtype of q ({_dtype_name(q.dtype)}), "
                        f"got k {_dtype_name(k.dtype)} and v {_dtype_name(v.dtype)}")
    if H == 0 or HV % H != 0:
        raise ValueError(f"v: the value heads HV = {HV} must be a positive multiple of the query/key heads "
                         f"H = {H} (grouped value attention)")
    if K not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"q: head dim K = {K} is not supported; supported: {SUPPORTED_HEAD_DIMS}")
    if V not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"v: head dim V = {V} is not supported; supported: {SUPPORTED_HEAD_DIMS}")
    for name, x in (("k", k), ("v", v), ("g", g), ("beta", beta)):
        check_device(name, x, q.device)
    return B, T, H, K, HV, V


def check_gate(use_gate_in_kernel: bool, safe_gate: bool, lower_bound, A_log, dt_bias, HV: int, K: int,
               device: torch.device) -> None:
    if use_gate_in_kernel:
        if safe_gate and (lower_bound is None or not SAFE_LOWER_BOUND[0] <= lower_bound < SAFE_LOWER_BOUND[1]):
            raise ValueError(f"lower_bound: safe_gate=True with use_gate_in_kernel=True needs a lower_bound in "
                             f"[-5, 0), got {lower_bound}")
        if lower_bound is not None and not lower_bound < 0:
            raise ValueError(f"lower_bound: expected a negative log-decay bound, got {lower_bound}")
        if lower_bound is None and A_log is None:
            raise ValueError("A_log: the softplus gate (use_gate_in_kernel=True without lower_bound) needs "
                             "A_log of shape [HV], got None")
    for name, x, numel, layout in (("A_log", A_log, HV, "[HV]"), ("dt_bias", dt_bias, HV * K, "[HV * K] or [HV, K]")):
        if x is None:
            continue
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor of shape {layout}, got {type(x).__name__}")
        if x.numel() != numel:
            raise ValueError(f"{name}: expected {numel} elements {layout} (HV = {HV}, K = {K}), "
                             f"got shape {tuple(x.shape)}")
        check_dtype(name, x, (torch.float32,))
        check_device(name, x, device)


def check_cu_seqlens(cu_seqlens, cu_seqlens_cpu, B: int, T: int, device: torch.device):
    """Returns (N, chunks): the number of sequences, and where the offsets are on the host, (the longest sequence's
    64-token chunks, all sequences' chunks), else None."""
    if not isinstance(cu_seqlens, torch.Tensor):
        raise TypeError(f"cu_seqlens: expected a torch.Tensor [N + 1], got {type(cu_seqlens).__name__}")
    if cu_seqlens.ndim != 1 or cu_seqlens.shape[0] < 2:
        raise ValueError(f"cu_seqlens: expected a 1-D tensor [N + 1] with N >= 1, got shape {tuple(cu_seqlens.shape)}")
    check_dtype("cu_seqlens", cu_seqlens, (torch.int32, torch.int64))
    if B != 1:
        raise ValueError(f"q: with cu_seqlens the batch size must be 1 (sequences packed along T), got B = {B}")
    if cu_seqlens.device != device and cu_seqlens.device.type != "cpu":
        raise ValueError(f"cu_seqlens: expected a tensor on {device} or the CPU, got one on {cu_seqlens.device}")
    host = cu_seqlens_cpu if cu_seqlens_cpu is not None else (cu_seqlens if cu_seqlens.device.type == "cpu" else None)
    if cu_seqlens_cpu is not None:
        if not isinstance(cu_seqlens_cpu, torch.Tensor) or tuple(cu_seqlens_cpu.shape) != tuple(cu_seqlens.shape):
            raise ValueError(f"cu_seqlens_cpu: expected a tensor of the shape of cu_seqlens {tuple(cu_seqlens.shape)}, "
                             f"got {getattr(cu_seqlens_cpu, 'shape', type(cu_seqlens_cpu).__name__)}")
    N = cu_seqlens.shape[0] - 1
    if host is None or torch.compiler.is_compiling():
        return N, None
    host = host.detach().cpu()
    if N <= HOST_LIST_SEQUENCES:    # in plain Python: below about 500 sequences faster than a few torch calls
        offsets = host.tolist()
        lengths = [b - a for a, b in zip(offsets, offsets[1:])]
        first, last = offsets[0], offsets[-1]
        shortest, longest, chunks = min(lengths), max(lengths), sum(-(-n // CHUNK) for n in lengths)
    else:
        lengths = host.long().diff()
        first, last, shortest, longest, chunks = torch.stack([
            host[0].long(), host[-1].long(), lengths.min(), lengths.max(),
            lengths.add(CHUNK - 1).div(CHUNK, rounding_mode="floor").sum()]).tolist()
    if first != 0:
        raise ValueError(f"cu_seqlens: expected to start at 0, got {first}")
    if shortest < 0:
        raise ValueError(f"cu_seqlens: expected non-decreasing offsets, got {host.tolist()[:16]}")
    if last != T:
        raise ValueError(f"cu_seqlens: expected to end at T = {T} (the length of q), got {last}")
    return N, (-(-longest // CHUNK), chunks)


def check_state(initial_state, N: int, HV: int, K: int, V: int, state_v_first: bool, device: torch.device) -> None:
    layout = "[N, HV, V, K] (state_v_first=True)" if state_v_first else "[N, HV, K, V]"
    expected = (N, HV, V, K) if state_v_first else (N, HV, K, V)
    check_tensor("initial_state", initial_state, 4, layout)
    if tuple(initial_state.shape) != expected:
        raise ValueError(f"initial_state: expected shape {layout} = {expected} for N = {N} sequences, "
                         f"got {tuple(initial_state.shape)}")
    check_dtype("initial_state", initial_state, STATE_DTYPES)
    check_device("initial_state", initial_state, device)
