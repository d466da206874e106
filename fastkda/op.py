"""The forward as a PyTorch custom operator, `torch.ops.fastkda.chunk_kda_fwd`: traceable by torch.compile
(with a fake implementation for shapes), and the autograd glue (no backward yet: it raises).

Arguments arrive validated by `fastkda.api`. On CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1,
the Triton kernels run; on CPU tensors otherwise, the chunked reference runs in float32 (float64 inputs:
float64)."""

from __future__ import annotations

import contextlib

import torch

from fastkda.forward import BETA_RAW, BETA_SIGMOID2, GATE_LOWER_BOUND, GATE_PRE, GateSpec, kda_forward
from fastkda.kernels.common import interpreting
from fastkda.reference.chunked import kda_chunked_reference

NONE = -1  # an int argument that is absent


def _state_shape(n: int, HV: int, K: int, V: int, state_v_first: bool) -> tuple[int, ...]:
    return (n, HV, V, K) if state_v_first else (n, HV, K, V)


def _reference_forward(q, k, v, g, beta, A_log, dt_bias, initial_state, cu_seqlens, scale, gate_mode,
                       lower_bound, beta_mode, l2norm, output_final_state, final_bf16, state_v_first,
                       num_intermediate):
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    o, ht, hi = kda_chunked_reference(
        q, k, v, g, beta, scale=scale, initial_state=initial_state, output_final_state=output_final_state,
        use_qk_l2norm_in_kernel=l2norm, use_gate_in_kernel=gate_mode != GATE_PRE,
        use_beta_sigmoid_in_kernel=beta_mode != BETA_RAW, allow_neg_eigval=beta_mode == BETA_SIGMOID2,
        lower_bound=lower_bound if gate_mode == GATE_LOWER_BOUND else None, A_log=A_log,
        dt_bias=dt_bias, state_v_first=state_v_first, cu_seqlens=cu_seqlens,
        return_intermediate_states=num_intermediate != NONE, dtype=dtype)
    o = o.to(q.dtype)
    if output_final_state:
        ht = ht.to(torch.bfloat16 if final_bf16 else torch.float32)
    if num_intermediate != NONE:
        pad = num_intermediate - hi.shape[1]
        hi = torch.cat([hi, hi.new_zeros(hi.shape[0], pad, *hi.shape[2:])], 1) if pad > 0 else hi
        hi = hi.to(k.dtype)
    return o, ht, hi


def run_forward(q, k, v, g, beta, A_log, dt_bias, initial_state, cu_seqlens, scale, gate_mode, bounded,
                lower_bound, beta_mode, l2norm, output_final_state, final_bf16, state_v_first, num_intermediate,
                longest_chunks, split_chunks, host_slots, out=None, final_out=None):
    """The forward on any device: Triton kernels, or the reference on the CPU. host_slots: a varlen batch's chunks
    where the host knows them, else NONE. out, final_out: optional buffers for o and the final state. Returns (o,
    final state or None, intermediate states or None)."""
    if q.device.type == "cpu" and not interpreting():
        o, ht, hi = _reference_forward(q, k, v, g, beta, A_log, dt_bias, initial_state, cu_seqlens, scale,
                                       gate_mode, lower_bound, beta_mode, l2norm, output_final_state, final_bf16,
                                       state_v_first, num_intermediate)
        if out is not None:
            o = out.copy_(o)
        if final_out is not None and output_final_state:
            ht = final_out.copy_(ht)
        return o, (ht if output_final_state else None), (hi if num_intermediate != NONE else None)
    # Triton launches on the current device (and its current stream): the inputs' device is made current for the
    # call where it is not, as a model spread over several GPUs in one process calls each layer on its own device
    other = q.is_cuda and q.device.index != torch.cuda.current_device()
    with torch.cuda.device(q.device) if other else contextlib.nullcontext():
        return kda_forward(
            q, k, v, g, beta, scale=scale, gate=GateSpec(gate_mode, bounded, lower_bound), A_log=A_log,
            dt_bias=dt_bias, beta_mode=beta_mode, l2norm=l2norm, initial_state=initial_state,
            output_final_state=output_final_state, final_state_dtype=torch.bfloat16 if final_bf16 else torch.float32,
            state_v_first=state_v_first, cu_seqlens=cu_seqlens,
            num_intermediate=None if num_intermediate == NONE else num_intermediate, longest_chunks=longest_chunks,
            split_chunks=None if split_chunks == NONE else split_chunks,
            host_slots=None if host_slots == NONE else host_slots, out=out, final_out=final_out)


@torch.library.custom_op("fastkda::chunk_kda_fwd", mutates_args=())
def chunk_kda_fwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
    A_log: torch.Tensor | None, dt_bias: torch.Tensor | None, initial_state: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None, scale: float, gate_mode: int, bounded: bool, lower_bound: float,
    beta_mode: int, l2norm: bool, output_final_state: bool, final_bf16: bool, state_v_first: bool,
    num_intermediate: int, longest_chunks: int, split_chunks: int, host_slots: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (o, final state or an empty tensor, intermediate states or an empty tensor).
    gate_mode: 0 pre-gated, 1 softplus, 2 lower-bounded; beta_mode: 0 as given, 1 sigmoid, 2 twice the sigmoid;
    num_intermediate, split_chunks, host_slots: -1 when absent (see `fastkda.forward.kda_forward`)."""
    o, ht, hi = run_forward(q, k, v, g, beta, A_log, dt_bias, initial_state, cu_seqlens, scale, gate_mode, bounded,
                            lower_bound, beta_mode, l2norm, output_final_state, final_bf16, state_v_first,
                            num_intermediate, longest_chunks, split_chunks, host_slots)
    return o, (ht if ht is not None else q.new_empty(0)), (hi if hi is not None else q.new_empty(0))


@chunk_kda_fwd.register_fake
def _(q, k, v, g, beta, A_log, dt_bias, initial_state, cu_seqlens, scale, gate_mode, bounded, lower_bound,
      beta_mode, l2norm, output_final_state, final_bf16, state_v_first, num_intermediate, longest_chunks,
      split_chunks, host_slots):
    B, T, _, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    N = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    o = q.new_empty(B, T, HV, V)
    ht = (q.new_empty(_state_shape(N, HV, K, V, state_v_first),
                      dtype=torch.bfloat16 if final_bf16 else torch.float32)
          if output_final_state else q.new_empty(0))
    hi = (k.new_empty((B, *_state_shape(num_intermediate, HV, K, V, state_v_first)))
          if num_intermediate != NONE else q.new_empty(0))
    return o, ht, hi


def _setup_context(ctx, inputs, output):
    pass


def _backward(ctx, grad_o, grad_ht, grad_hi):
    raise NotImplementedError(
        "fastkda.chunk_kda has no backward yet (forward only); for training use fla.ops.kda.chunk_kda")


chunk_kda_fwd.register_autograd(_backward, setup_context=_setup_context)
