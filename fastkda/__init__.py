"""fastkda: fast Triton kernels for Kimi Delta Attention (KDA) on NVIDIA Hopper.

Entry points load on first use, so that TRITON_INTERPRET can still be set after `import fastkda`."""

__version__ = "0.1.0"

__all__ = ["chunk_kda", "__version__"]


def __getattr__(name):
    if name == "chunk_kda":
        from fastkda.api import chunk_kda
        return chunk_kda
    raise AttributeError(f"module 'fastkda' has no attribute {name!r}")
