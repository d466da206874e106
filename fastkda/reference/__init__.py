"""Pure-PyTorch references: the ground truth for every kernel test."""

from fastkda.reference.chunked import kda_chunked_reference
from fastkda.reference.gates import beta_activation, kda_gate, l2norm
from fastkda.reference.recurrent import kda_recurrent_reference

__all__ = ["kda_chunked_reference", "kda_recurrent_reference", "kda_gate", "beta_activation", "l2norm"]
