"""Public forward entry point: `fastkda.chunk_kda`, with the arguments and meaning of fla's `chunk_kda`."""

from __future__ import annotations

import warnings

import torch
import triton

from fastkda.forward import (BETA_RAW, BETA_SIGMOID, BETA_SIGMOID2, GATE_LOWER_BOUND, GATE_PRE,
                             GATE_SOFTPLUS)
from fastkda.kernels.chunk_prepare import CHUNK, MAX_ROW_STRIDE
from fastkda.op import NONE, chunk_kda_fwd, run_forward
from fastkda.validation import SAFE_LOWER_BOUND, check_cu_seqlens, check_gate, check_inputs, check_state

_ACCEPTED_KWARGS = {"transpose_state_layout", "chunk_size"}
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def _eager(tensors) -> bool:
    """Whether a call may run the forward directly rather than through the custom operator, whose dispatch took
    0.1-0.2 ms of host time a call (an H100 host, docs/perf-notes.md v42): not traced by torch.compile, plain tensors
    or parameters (not fake or other subclasses) on a CUDA device or the CPU (meta tensors take the operator's fake
    implementation), and no autograd graph to record (through the operator the backward raises a clear error)."""
    if torch.compiler.is_compiling() or tensors[0].device.type not in ("cuda", "cpu"):
        return False
    grad = torch.is_grad_enabled()
    return all(x is None or type(x) in _PLAIN and not (grad and x.requires_grad) for x in tensors)


def chunk_kda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    use_gate_in_kernel: bool = False,
    use_beta_sigmoid_in_kernel: bool = False,
    allow_neg_eigval: bool = False,
    safe_gate: bool = False,
    lower_bound: float | None = None,
    disable_recompute: bool = False,
    return_intermediate_states: bool = False,
    state_v_first: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    cu_seqlens_cpu: torch.Tensor | None = None,
    cp_context=None,
    use_graph: bool = False,
    max_num_seqs: int | None = None,
    *,
    A_log: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    split_size: int | None = None,
    **kwargs,
):
    r"""Kimi Delta Attention forward, chunked, in fused Triton kernels.

    Args:
        q, k: queries and keys ``[B, T, H, K]`` (bf16, fp16 or fp32; K in {64, 128}).
        v: values ``[B, T, HV, V]``, HV a multiple of H (grouped value heads), V in {64, 128}.
        g: gate ``[B, T, HV, K]``: the log-decay itself, or with ``use_gate_in_kernel`` the raw gate input.
        beta: ``[B, T, HV]``: the update strength, or with ``use_beta_sigmoid_in_kernel`` its logits.
        scale: output scale, default ``K ** -0.5``.
        initial_state: ``[N, HV, K, V]`` (``[N, HV, V, K]`` with ``state_v_first``), fp32 or bf16.
        output_final_state: also return the state after each sequence, in the dtype of ``initial_state``
            (fp32 without one).
        use_qk_l2norm_in_kernel: l2-normalize q and k per head (``x * rsqrt(sum(x^2) + 1e-6)``).
        use_gate_in_kernel: compute the log-decay from g: ``lower_bound * sigmoid(exp(A_log) * (g + dt_bias))``
            when ``lower_bound`` is set (A_log optional), else ``-exp(A_log) * softplus(g + dt_bias)``.
        use_beta_sigmoid_in_kernel: beta holds logits; ``allow_neg_eigval`` doubles the sigmoid.
        safe_gate: with ``use_gate_in_kernel``, asserts ``lower_bound`` in [-5, 0) (the fast bounded path
            is taken for any such bound with or without it).
        lower_bound: lower bound of the per-step log-decay of the in-kernel gate.
        disable_recompute: accepted for fla compatibility; no effect on a forward.
        return_intermediate_states: also return the state at the start of every 64-token chunk,
            ``[B, NT, HV, K, V]`` in the dtype of k, laid out as fla does (varlen: ``B = 1`` and the chunks
            of all sequences in order). Without host lengths (``cu_seqlens_cpu``) the number of chunk slots
            is the bound ``ceil(T / 64) + N - 1`` and the slots past the real count are zero.
        state_v_first: states laid out ``[..., V, K]`` (``transpose_state_layout`` is its old name).
        cu_seqlens: ``[N + 1]`` int32/int64 offsets of N packed sequences (B = 1); empty sequences allowed.
        cu_seqlens_cpu: the same offsets on the host, if the caller has them: enables the content checks
            and exact sizes without reading the device, and with many heads a prepare grid of the real chunks
            only (about 1% faster at 8 sequences and 96 heads).
        cp_context: context parallelism is not supported (NotImplementedError).
        use_graph, max_num_seqs: accepted for fla compatibility; this forward never synchronizes the host
            and is always capturable in a CUDA graph.
        A_log: ``[HV]`` fp32. dt_bias: ``[HV * K]`` or ``[HV, K]`` fp32.
        split_size: tokens per segment of the split-sequence path (a multiple of 64), 0 to never split,
            None to choose from the shape and the device (docs/split.md).
        chunk_size: 64 only.

    Returns:
        ``(o, final_state)``, or ``(o, final_state, intermediate_states)`` with ``return_intermediate_states``;
        ``o`` is ``[B, T, HV, V]`` in the dtype of q; ``final_state`` is None without ``output_final_state``.

    Forward only: the backward raises NotImplementedError.
    """
    call = normalize_call(
        q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel, use_gate_in_kernel,
        use_beta_sigmoid_in_kernel, allow_neg_eigval, safe_gate, lower_bound, return_intermediate_states,
        state_v_first, cu_seqlens, cu_seqlens_cpu, cp_context, A_log, dt_bias, split_size, kwargs)
    # q, k, v, g, beta, A_log, dt_bias, initial_state, cu_seqlens
    o, ht, hi = (run_forward if _eager(call[:9]) else chunk_kda_fwd)(*call)
    final_state = ht if output_final_state else None
    if return_intermediate_states:
        return o, final_state, hi
    return o, final_state


def normalize_call(q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel,
                   use_gate_in_kernel, use_beta_sigmoid_in_kernel, allow_neg_eigval, safe_gate, lower_bound,
                   return_intermediate_states, state_v_first, cu_seqlens, cu_seqlens_cpu, cp_context, A_log,
                   dt_bias, split_size, kwargs) -> tuple:
    """Validates the arguments of `chunk_kda` and returns those of the operator `fastkda::chunk_kda_fwd`."""
    unknown = set(kwargs) - _ACCEPTED_KWARGS
    if unknown:
        raise TypeError(f"chunk_kda: unexpected keyword arguments {sorted(unknown)}")
    if "transpose_state_layout" in kwargs:
        if state_v_first:
            raise ValueError("state_v_first: cannot be combined with its deprecated alias transpose_state_layout")
        warnings.warn("transpose_state_layout is deprecated; use state_v_first", DeprecationWarning, stacklevel=2)
        state_v_first = bool(kwargs["transpose_state_layout"])
    if kwargs.get("chunk_size", CHUNK) != CHUNK:
        raise NotImplementedError(f"chunk_size: only {CHUNK} is implemented, got {kwargs['chunk_size']}")
    if cp_context is not None:
        raise NotImplementedError("cp_context: context parallelism is not implemented in fastkda")
    if allow_neg_eigval and not use_beta_sigmoid_in_kernel:
        raise ValueError("allow_neg_eigval: requires use_beta_sigmoid_in_kernel=True")
    if split_size is not None and (not isinstance(split_size, int) or split_size < 0 or split_size % CHUNK):
        raise ValueError(f"split_size: expected None or a non-negative multiple of {CHUNK}, got {split_size}")

    B, T, H, K, HV, V = check_inputs(q, k, v, g, beta)
    device = q.device
    check_gate(use_gate_in_kernel, safe_gate, lower_bound, A_log, dt_bias, HV, K, device)
    host_chunks = None
    if cu_seqlens is not None:
        N, host_chunks = check_cu_seqlens(cu_seqlens, cu_seqlens_cpu, B, T, device)
        if cu_seqlens.device != device:
            # from pageable host memory the copy is staged at once and waits for no kernel (a blocking copy waited for
            # everything queued on the stream); a pinned tensor, which the caller may rewrite, is copied blocking
            cu_seqlens = cu_seqlens.to(device, non_blocking=not cu_seqlens.is_pinned())
        if host_chunks is not None and N == 1:
            # one sequence over all of q, known on the host: the fixed-length path (B = 1) computes the same into the
            # same shapes, and its planner can walk the sequence's head beside the prepare kernel (forward.plan_head)
            cu_seqlens = host_chunks = None
    else:
        if cu_seqlens_cpu is not None:
            raise ValueError("cu_seqlens_cpu: given without cu_seqlens")
        N = B
    if initial_state is not None:
        check_state(initial_state, N, HV, K, V, state_v_first, device)
    if scale is None:
        scale = K ** -0.5

    if use_gate_in_kernel:
        gate_mode = GATE_LOWER_BOUND if lower_bound is not None else GATE_SOFTPLUS
    else:
        gate_mode = GATE_PRE
    bounded = gate_mode == GATE_LOWER_BOUND and SAFE_LOWER_BOUND[0] <= lower_bound < SAFE_LOWER_BOUND[1]
    beta_mode = (BETA_SIGMOID2 if allow_neg_eigval else BETA_SIGMOID) if use_beta_sigmoid_in_kernel else BETA_RAW

    if cu_seqlens is None:
        longest = num_chunks = triton.cdiv(T, CHUNK)
    elif host_chunks is not None:
        longest, num_chunks = host_chunks
    else:
        longest = triton.cdiv(T, CHUNK)
        num_chunks = triton.cdiv(T, CHUNK) + N - 1
    # the kernels need unit stride in the head dim only; other strides are read as given, except a token stride
    # so large that a chunk's 64 rows overflow int32 offsets (the kernels offset rows from the chunk's first)
    q, k, v, g = (x if x.stride(-1) == 1 and x.stride(1) < MAX_ROW_STRIDE else x.contiguous() for x in (q, k, v, g))
    if beta.stride(1) >= MAX_ROW_STRIDE:
        beta = beta.contiguous()
    if dt_bias is not None:
        dt_bias = dt_bias.reshape(HV * K).contiguous()
    if A_log is not None:
        A_log = A_log.reshape(HV).contiguous()
    if initial_state is not None:
        initial_state = initial_state.contiguous()

    return (
        q, k, v, g, beta, A_log, dt_bias, initial_state, cu_seqlens, float(scale), gate_mode, bounded,
        float(lower_bound) if lower_bound is not None else 0.0, beta_mode, bool(use_qk_l2norm_in_kernel),
        bool(output_final_state), initial_state is not None and initial_state.dtype == torch.bfloat16,
        bool(state_v_first), num_chunks if return_intermediate_states else NONE, longest,
        NONE if split_size is None else split_size // CHUNK, num_chunks if host_chunks is not None else NONE)
