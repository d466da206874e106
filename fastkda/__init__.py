"""fastkda: fast Triton kernels for Kimi Delta Attention (KDA) on NVIDIA Hopper.

Entry points load on first use, so that TRITON_INTERPRET can still be set after `import fastkda`:
`chunk_kda` (fla's signature), `fwd` (FlashKDA's), `register_fla_backend` (fla dispatches to fastkda)."""

__version__ = "0.1.0"

__all__ = ["chunk_kda", "fwd", "register_fla_backend", "__version__"]


def __getattr__(name):
    if name == "chunk_kda":
        from fastkda.api import chunk_kda
        return chunk_kda
    if name == "fwd":
        from fastkda.integrations.flash_kda import fwd
        return fwd
    if name == "register_fla_backend":
        from fastkda.integrations.fla import register
        return register
    raise AttributeError(f"module 'fastkda' has no attribute {name!r}")
