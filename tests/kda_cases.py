"""Input generation and comparison shared by the kernel tests on CPU (interpreter) and GPU."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

import fastkda
from fastkda.reference import kda_chunked_reference
from fastkda.reference.gates import l2norm

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class Case:
    """One call of chunk_kda. gate: "lb" (lower_bound -5), "softplus", or "pre" (g is the log-decay)."""

    T: int = 130
    B: int = 1
    H: int = 1
    HV: int = 2
    K: int = 64
    V: int = 64
    dtype: str = "bf16"
    g_dtype: str | None = None        # g's dtype where it differs from dtype
    gate: str = "lb"
    lower_bound: float = -5.0
    l2norm: bool = True
    beta_sigmoid: bool = True
    h0: str | None = "fp32"           # initial state dtype, or None
    final: bool = True
    v_first: bool = False
    seqlens: tuple[int, ...] | None = None   # varlen (B must be 1, T = sum)
    host_lengths: bool = False        # pass cu_seqlens_cpu
    intermediate: bool = False
    split_size: int | None = 0        # 0: one segment per sequence
    g_fill: str | None = None         # gate sweep: "g=<value>", "g=uniform", "g=normal", "bias=..."
    collinear: bool = False           # all keys of a chunk within 1e-3 of one unit vector
    beta_value: float | None = None   # every beta this value (with beta_sigmoid=False: as given)
    strided: bool = False             # q, k, v as slices of one fused projection
    misaligned: bool = False          # q, k, g and v start 2 bytes past a 4-byte boundary
    qk_rows: str | None = None        # with l2norm: "wide" (rows of q and k scaled by 2^-24 .. 2^24), "lead0" (the
                                      # first 32 key dims of every third token zero)
    seed: int = 0

    @property
    def id(self) -> str:
        gate = self.gate if self.gate != "lb" or self.lower_bound == -5.0 else f"lb{self.lower_bound:g}"
        parts = [f"T{self.T}", f"B{self.B}", f"H{self.H}x{self.HV // self.H}", f"K{self.K}V{self.V}", self.dtype, gate]
        if self.g_dtype:
            parts.append(f"g{self.g_dtype}")
        if self.seqlens:
            parts.append("varlen" + "-".join(map(str, self.seqlens)))
        for flag, name in ((not self.l2norm, "nol2"), (not self.beta_sigmoid, "rawbeta"), (self.v_first, "vfirst"),
                           (self.intermediate, "inter"), (self.collinear, "collinear"), (self.strided, "strided"),
                           (self.misaligned, "misaligned"),
                           (self.host_lengths, "hostlens")):
            if flag:
                parts.append(name)
        if self.h0 != "fp32":
            parts.append(f"h0{self.h0}")
        if self.split_size:
            parts.append(f"split{self.split_size}")
        if self.g_fill:
            parts.append(self.g_fill)
        if self.beta_value is not None:
            parts.append(f"beta={self.beta_value:g}")
        if self.qk_rows:
            parts.append(f"qk-{self.qk_rows}")
        return "-".join(parts)


def make_inputs(case: Case, device) -> dict:
    """chunk_kda keyword arguments for the case, on `device`, from fresh random inputs."""
    gen = torch.Generator().manual_seed(case.seed)
    dt = DTYPES[case.dtype]
    B, T, H, HV, K, V = case.B, case.T, case.H, case.HV, case.K, case.V
    rnd = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    q, k, v = rnd(B, T, H, K), rnd(B, T, H, K), rnd(B, T, HV, V)
    if case.collinear:
        u = l2norm(rnd(K))
        k = u + 1e-3 * l2norm(rnd(B, T, H, K))
    if not case.l2norm:  # a model normalizes keys itself; unnormalized keys make the recurrence diverge
        q, k = l2norm(q), l2norm(k)
    if case.qk_rows == "wide":
        q = q * torch.exp2(torch.randint(-24, 25, (B, T, H, 1), generator=gen).float())
        k = k * torch.exp2(torch.randint(-24, 25, (B, T, H, 1), generator=gen).float())
    elif case.qk_rows == "lead0":
        lead = (torch.arange(T) % 3 == 0)[None, :, None, None] & (torch.arange(K) < 32)
        q, k = q.masked_fill(lead, 0.0), k.masked_fill(lead, 0.0)
    g = rnd(B, T, HV, K)
    A_log, dt_bias = torch.rand(HV, generator=gen), torch.rand(HV * K, generator=gen)
    if case.g_fill:
        what, _, val = case.g_fill.partition("=")
        fill = {"uniform": lambda s: torch.rand(*s, generator=gen) * 16 - 8,
                "normal": lambda s: 8 * rnd(*s),
                # strong decay (exp(-20) a step) in the first half of the key dims, mild in the rest
                "mixed": lambda s: torch.where(torch.arange(s[-1]) < s[-1] // 2, -20.0,
                                               -torch.nn.functional.softplus(rnd(*s)))}.get(
            val, lambda s: torch.full(s, float(val)))
        if what == "g":
            g, dt_bias = fill((B, T, HV, K)), torch.zeros(HV * K)
        else:
            g, dt_bias = torch.zeros(B, T, HV, K), fill((HV * K,))
    if case.gate == "pre":
        g = -torch.nn.functional.softplus(g) if not case.g_fill else g
    beta = rnd(B, T, HV) if case.beta_sigmoid else torch.rand(B, T, HV, generator=gen)
    if case.beta_value is not None:
        beta = torch.full((B, T, HV), case.beta_value)
    args = dict(q=q.to(dt), k=k.to(dt), v=v.to(dt), g=g.to(DTYPES[case.g_dtype or case.dtype]), beta=beta.to(dt),
                use_qk_l2norm_in_kernel=case.l2norm, use_beta_sigmoid_in_kernel=case.beta_sigmoid,
                output_final_state=case.final, state_v_first=case.v_first,
                return_intermediate_states=case.intermediate, split_size=case.split_size)
    if case.gate != "pre":
        args.update(use_gate_in_kernel=True, A_log=A_log, dt_bias=dt_bias)
    if case.gate == "lb":
        args.update(lower_bound=case.lower_bound, safe_gate=-5 <= case.lower_bound < 0)
    N = B
    if case.seqlens is not None:
        cu = torch.tensor([0, *torch.tensor(case.seqlens).cumsum(0).tolist()], dtype=torch.int32)
        args["cu_seqlens"] = cu
        if case.host_lengths:
            args["cu_seqlens_cpu"] = cu.clone()
        N = len(case.seqlens)
    if case.h0 is not None:
        shape = (N, HV, V, K) if case.v_first else (N, HV, K, V)
        args["initial_state"] = (0.1 * rnd(*shape)).to(DTYPES[case.h0])
    if case.strided:  # q, k, v as views into one fused projection output (row stride 2HK + HV V + 8)
        fused = torch.cat([args["q"].flatten(2), args["k"].flatten(2), args["v"].flatten(2),
                           torch.zeros(B, T, 8, dtype=dt)], -1).to(device)
        args["q"] = fused[..., :H * K].unflatten(-1, (H, K))
        args["k"] = fused[..., H * K:2 * H * K].unflatten(-1, (H, K))
        args["v"] = fused[..., 2 * H * K:2 * H * K + HV * V].unflatten(-1, (HV, V))
    if case.misaligned:
        for n in ("q", "k", "g", "v"):
            x = args[n].to(device)
            buf = torch.empty(x.numel() + 1, dtype=x.dtype, device=device)
            buf[1:].copy_(x.flatten())
            args[n] = buf[1:].view(x.shape)
    return {n: (x.to(device) if isinstance(x, torch.Tensor) and n != "cu_seqlens_cpu" else x)
            for n, x in args.items()}


def reference(args: dict):
    """float64 reference outputs (o, final, h) for chunk_kda keyword arguments."""
    ref_args = {n: x for n, x in args.items() if n not in ("split_size", "safe_gate", "cu_seqlens_cpu")}
    ref_args = {n: (x.cpu() if isinstance(x, torch.Tensor) else x) for n, x in ref_args.items()}
    return kda_chunked_reference(**ref_args)


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """RMS-relative error; NaN anywhere gives inf."""
    x = x.detach().double().cpu()
    if not torch.isfinite(x).all():
        return float("inf")
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def run_case(case: Case, device) -> dict[str, float]:
    """Runs chunk_kda on the case and returns the RMS-relative error of each output vs the reference."""
    args = make_inputs(case, device)
    out = fastkda.chunk_kda(**args)
    ref = reference(args)
    errs = {"o": rel_err(out[0], ref[0])}
    if case.final:
        errs["final"] = rel_err(out[1], ref[1])
    if case.intermediate:
        h, h_ref = out[2], ref[2]
        n = h_ref.shape[1]
        errs["inter"] = rel_err(h[:, :n], h_ref)
        if h.shape[1] > n:
            errs["inter_pad"] = float(h[:, n:].abs().max()) if h[:, n:].numel() else 0.0
    return errs


def with_(case: Case, **kw) -> Case:
    return replace(case, **kw)
