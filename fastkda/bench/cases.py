"""The benchmark's case table: KDA.md section 6 first, then the shapes users also ask about."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BenchCase:
    """One forward call. seqlens: varlen lengths (B = 1), else B sequences of T tokens.

    gate: "lb" (lower_bound -5, the Kimi-K3 gate) or "softplus" (Kimi-Linear-48B); HV: value heads (GVA)."""

    name: str
    T: int = 8192
    H: int = 96
    HV: int | None = None
    B: int = 1
    K: int = 128
    V: int = 128
    seqlens: tuple[int, ...] | None = None
    gate: str = "lb"
    state_dtype: str = "fp32"

    @property
    def value_heads(self) -> int:
        return self.HV or self.H

    @property
    def tokens(self) -> int:
        return sum(self.seqlens) if self.seqlens else self.B * self.T


def _varlen(name: str, lens, H: int) -> BenchCase:
    return BenchCase(name, T=sum(lens), H=H, seqlens=tuple(lens))


KDA_MD = [
    BenchCase("T8192-H96"),
    _varlen("varlen6-H96", [1300, 547, 2048, 963, 271, 3063], 96),
    _varlen("varlen1024x8-H96", [1024] * 8, 96),
    BenchCase("T8192-H64", H=64),
    BenchCase("T8192-H32", H=32),
    BenchCase("T8192-H12", H=12),
    BenchCase("T16384-H16", T=16384, H=16),
    BenchCase("T32768-H8", T=32768, H=8),
    BenchCase("T65536-H4", T=65536, H=4),
]

EXTRA = [
    BenchCase("B8-T4096-H32", T=4096, B=8, H=32),
    _varlen("varlen256x64-H32", [256] * 64, 32),
    BenchCase("T8192-H32-softplus", H=32, gate="softplus"),
    BenchCase("T8192-H32-bf16state", H=32, state_dtype="bf16"),
    BenchCase("T8192-H16-GVA32", H=16, HV=32),
    BenchCase("T8192-H32-K64V64", H=32, K=64, V=64),
    _varlen("varlen60000+64x64-H8", [60000] + [64] * 64, 8),
]

DEFAULT = KDA_MD + EXTRA
# many, some and few heads; each head count more costs fla about ten seconds of autotuning even when compiled
QUICK = [c for c in DEFAULT if c.name in ("T8192-H96", "T8192-H32", "T65536-H4")]
CPU_SMOKE = BenchCase("cpu-smoke", T=200, H=1, HV=2, K=64, V=64)
CASES = {c.name: c for c in DEFAULT + [CPU_SMOKE]}
