"""fastkda as a backend of flash-linear-attention (fla >= 0.6): after `register()`, calls of
`fla.ops.kda.chunk_kda` that fastkda serves run fastkda's forward; the others run fla's own kernels, and fla
logs the reason at INFO (logger `fla.backends`).

fastkda serves a call when no gradient is needed (inference mode, no_grad, or no input that requires one),
the tensors are on a CUDA device, the head dims are 64 or 128, and there is no context parallelism. The
environment variable FLA_FASTKDA=0 turns the backend off. fastkda's priority (2) comes before FlashKDA's (3),
so it is preferred when both are installed; register(priority=4) puts it after.
"""

from __future__ import annotations

import torch

import fastkda
from fastkda.validation import SUPPORTED_HEAD_DIMS

calls = 0  # calls that fla dispatched to fastkda (a check that dispatch happens)
_registered: dict = {}


def _grad_needed(*tensors) -> bool:
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


def verify(q, k, v, g, beta, *args, **kwargs) -> tuple[bool, str | None]:
    """(True, None) when fastkda serves the call, else (False, the reason)."""
    if _grad_needed(q, k, v, g, beta, kwargs.get("A_log"), kwargs.get("dt_bias"),
                    kwargs.get("initial_state", args[1] if len(args) > 1 else None)):
        return False, "fastkda has no backward yet (inputs require grad)"
    if q.device.type != "cuda":
        return False, f"fastkda runs on CUDA tensors, got {q.device}"
    if q.shape[-1] not in SUPPORTED_HEAD_DIMS or v.shape[-1] not in SUPPORTED_HEAD_DIMS:
        return False, f"fastkda supports head dims {SUPPORTED_HEAD_DIMS}, got K={q.shape[-1]}, V={v.shape[-1]}"
    if kwargs.get("cp_context") is not None or (len(args) > 14 and args[14] is not None):
        return False, "fastkda does not implement context parallelism (cp_context)"
    if kwargs.get("chunk_size", 64) != 64:
        return False, f"fastkda runs 64-token chunks, got chunk_size={kwargs['chunk_size']}"
    return True, None


def register(priority: int = 2):
    """Registers fastkda with fla's backend registry for `fla.ops.kda.chunk_kda`. Idempotent; returns the
    backend instance."""
    from fla.backends import BaseBackend
    from fla.backends import register as fla_register
    from fla.ops.kda.chunk import chunk_kda as fla_chunk_kda

    if priority in _registered:
        return _registered[priority]

    class FastKDABackend(BaseBackend):
        backend_type = "fastkda"
        package_name = "fastkda"
        env_var = "FLA_FASTKDA"
        default_enable = True

        def chunk_kda_verifier(self, *args, **kwargs):
            return verify(*args, **kwargs)

        def chunk_kda(self, *args, **kwargs):
            global calls
            calls += 1
            return fastkda.chunk_kda(*args, **kwargs)

    FastKDABackend.priority = priority
    fla_register(fla_chunk_kda)(FastKDABackend)
    _registered.clear()
    _registered[priority] = FastKDABackend
    return FastKDABackend
