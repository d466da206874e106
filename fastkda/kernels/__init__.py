"""Triton kernels of the KDA forward, by stage: the fused chunk kernel, and the split-sequence helpers."""
