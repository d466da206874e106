"""Every validation error names the argument, what was expected and what came."""

from __future__ import annotations

import pytest
import torch

import fastkda
from fastkda.validation import HOST_LIST_SEQUENCES, check_cu_seqlens


def base(B=1, T=8, H=2, HV=2, K=64, V=64, dtype=torch.bfloat16):
    return dict(q=torch.randn(B, T, H, K, dtype=dtype), k=torch.randn(B, T, H, K, dtype=dtype),
                v=torch.randn(B, T, HV, V, dtype=dtype), g=torch.randn(B, T, HV, K, dtype=dtype),
                beta=torch.randn(B, T, HV, dtype=dtype))


def call(**over):
    args = base()
    args.update(over)
    return fastkda.chunk_kda(**args)


def with_cu(cu, **over):
    b = base(T=10)
    b.update(cu_seqlens=torch.tensor(cu, dtype=torch.int64), **over)
    return b


CASES = [
    ("q-not-tensor", dict(q=[1.0]), TypeError, r"q: expected a torch.Tensor .*got list"),
    ("q-rank", dict(q=torch.randn(8, 2, 64)), ValueError, r"q: expected 4 dimensions \[B, T, H, K\], got shape \(8, 2, 64\)"),
    ("beta-rank", dict(beta=torch.randn(1, 8, 2, 1)), ValueError, r"beta: expected 3 dimensions"),
    ("k-shape", dict(k=torch.randn(1, 8, 2, 128, dtype=torch.bfloat16)), ValueError, r"k: expected shape .*\(1, 8, 2, 64\), got \(1, 8, 2, 128\)"),
    ("v-BT", dict(v=torch.randn(1, 9, 2, 64, dtype=torch.bfloat16)), ValueError, r"v: expected shape \[B, T, HV, V\] with B, T = 1, 8"),
    ("g-shape", dict(g=torch.randn(1, 8, 2, 32, dtype=torch.bfloat16)), ValueError, r"g: expected shape \[B, T, HV, K\] = \(1, 8, 2, 64\)"),
    ("beta-shape", dict(beta=torch.randn(1, 8, 3, dtype=torch.bfloat16)), ValueError, r"beta: expected shape \[B, T, HV\] = \(1, 8, 2\)"),
    ("dtype-int", dict(g=torch.zeros(1, 8, 2, 64, dtype=torch.int32)), TypeError, r"g: expected dtype bfloat16, float16, float32, got int32"),
    ("dtype-mixed", dict(k=torch.randn(1, 8, 2, 64, dtype=torch.float32)), TypeError, r"k, v: expected the dtype of q \(bfloat16\), got k float32"),
    ("gva-not-multiple", dict(v=torch.randn(1, 8, 3, 64, dtype=torch.bfloat16), g=torch.randn(1, 8, 3, 64, dtype=torch.bfloat16),
                              beta=torch.randn(1, 8, 3, dtype=torch.bfloat16)), ValueError, r"HV = 3 must be a positive multiple of .* H = 2"),
    ("head-dim-K", dict(**{n: x for n, x in base(K=96).items() if n in ("q", "k", "g")}), ValueError,
     r"q: head dim K = 96 is not supported; supported: \(64, 128\)"),
    ("head-dim-V", dict(v=torch.randn(1, 8, 2, 32, dtype=torch.bfloat16)), ValueError, r"v: head dim V = 32 is not supported; supported: \(64, 128\)"),
    ("safe-gate-no-bound", dict(use_gate_in_kernel=True, safe_gate=True, A_log=torch.zeros(2)), ValueError,
     r"lower_bound: safe_gate=True .* needs a lower_bound in \[-5, 0\), got None"),
    ("safe-gate-bad-bound", dict(use_gate_in_kernel=True, safe_gate=True, lower_bound=-6.0), ValueError,
     r"lower_bound: .*in \[-5, 0\), got -6.0"),
    ("positive-bound", dict(use_gate_in_kernel=True, lower_bound=1.0), ValueError, r"lower_bound: expected a negative log-decay bound, got 1.0"),
    ("softplus-no-A", dict(use_gate_in_kernel=True), ValueError, r"A_log: the softplus gate .* needs A_log of shape \[HV\], got None"),
    ("A_log-size", dict(use_gate_in_kernel=True, A_log=torch.zeros(3)), ValueError, r"A_log: expected 2 elements \[HV\] \(HV = 2, K = 64\), got shape \(3,\)"),
    ("A_log-dtype", dict(use_gate_in_kernel=True, A_log=torch.zeros(2, dtype=torch.bfloat16)), TypeError, r"A_log: expected dtype float32, got bfloat16"),
    ("dt_bias-size", dict(use_gate_in_kernel=True, lower_bound=-5.0, dt_bias=torch.zeros(2, 32)), ValueError,
     r"dt_bias: expected 128 elements \[HV \* K\] or \[HV, K\] \(HV = 2, K = 64\), got shape \(2, 32\)"),
    ("neg-eigval-without-sigmoid", dict(allow_neg_eigval=True), ValueError, r"allow_neg_eigval: requires use_beta_sigmoid_in_kernel=True"),
    ("unknown-kwarg", dict(foo=1), TypeError, r"unexpected keyword arguments \['foo'\]"),
    ("chunk-size", dict(chunk_size=32), NotImplementedError, r"chunk_size: only 64 is implemented, got 32"),
    ("cp-context", dict(cp_context=object()), NotImplementedError, r"cp_context: context parallelism is not implemented"),
    ("both-layout-names", dict(state_v_first=True, transpose_state_layout=True), ValueError, r"state_v_first: cannot be combined"),
    ("split-size", dict(split_size=100), ValueError, r"split_size: expected None or a non-negative multiple of 64, got 100"),
    ("h0-shape", dict(initial_state=torch.zeros(1, 2, 64, 32)), ValueError,
     r"initial_state: expected shape \[N, HV, K, V\] = \(1, 2, 64, 64\) for N = 1 sequences, got \(1, 2, 64, 32\)"),
    ("h0-shape-vfirst", dict(initial_state=torch.zeros(1, 2, 64, 32), state_v_first=True), ValueError,
     r"initial_state: expected shape \[N, HV, V, K\] \(state_v_first=True\)"),
    ("h0-dtype", dict(initial_state=torch.zeros(1, 2, 64, 64, dtype=torch.float16)), TypeError,
     r"initial_state: expected dtype float32, bfloat16, got float16"),
    ("h0-count", dict(initial_state=torch.zeros(2, 2, 64, 64)), ValueError, r"for N = 1 sequences"),
    ("scalar-h0", dict(initial_state=torch.zeros(2)), ValueError, r"initial_state: expected 4 dimensions"),
    ("cu-2d", dict(cu_seqlens=torch.zeros(2, 2, dtype=torch.int64)), ValueError, r"cu_seqlens: expected a 1-D tensor \[N \+ 1\]"),
    ("cu-float", dict(cu_seqlens=torch.tensor([0.0, 8.0])), TypeError, r"cu_seqlens: expected dtype int32, int64, got float32"),
    ("cu-batch", dict(**base(B=2), cu_seqlens=torch.tensor([0, 8])), ValueError, r"q: with cu_seqlens the batch size must be 1 .*got B = 2"),
    ("cu-start", dict(cu_seqlens=torch.tensor([1, 8])), ValueError, r"cu_seqlens: expected to start at 0, got 1"),
    ("cu-decreasing", dict(cu_seqlens=torch.tensor([0, 6, 4, 8])), ValueError, r"cu_seqlens: expected non-decreasing offsets"),
    ("cu-end", dict(cu_seqlens=torch.tensor([0, 4, 7])), ValueError, r"cu_seqlens: expected to end at T = 8 \(the length of q\), got 7"),
    ("cu-cpu-shape", dict(cu_seqlens=torch.tensor([0, 8]), cu_seqlens_cpu=torch.tensor([0, 4, 8])), ValueError,
     r"cu_seqlens_cpu: expected a tensor of the shape of cu_seqlens"),
    ("cu-cpu-alone", dict(cu_seqlens_cpu=torch.tensor([0, 8])), ValueError, r"cu_seqlens_cpu: given without cu_seqlens"),
    ("h0-count-varlen", dict(cu_seqlens=torch.tensor([0, 3, 8]), initial_state=torch.zeros(1, 2, 64, 64)), ValueError, r"for N = 2 sequences"),
]


@pytest.mark.parametrize("over,exc,pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error_message(over, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call(**over)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs two devices (CPU and CUDA)")
def test_device_mismatch():
    with pytest.raises(ValueError, match=r"k: expected a tensor on cuda"):
        call(q=torch.randn(1, 8, 2, 64, dtype=torch.bfloat16, device="cuda"))


def test_deprecated_layout_alias_warns_and_works():
    h0 = torch.zeros(1, 2, 64, 64)
    with pytest.warns(DeprecationWarning, match="transpose_state_layout"):
        o, ht = call(initial_state=h0, output_final_state=True, transpose_state_layout=True)
    assert ht.shape == (1, 2, 64, 64)


def test_backward_raises_clearly():
    args = base()
    args["q"].requires_grad_(True)
    o, _ = fastkda.chunk_kda(**args)
    with pytest.raises(NotImplementedError, match="no backward yet"):
        o.float().sum().backward()


def test_token_stride_past_int32_rows_is_copied():
    """The kernels offset a chunk's rows in int32; a view whose 64 rows would overflow that is copied first."""
    from fastkda.kernels.chunk_prepare import MAX_ROW_STRIDE
    args = base(T=1)
    q = args["q"]
    view = q.as_strided(q.shape, (q.stride(0), MAX_ROW_STRIDE, q.stride(2), 1))
    o_view, _ = fastkda.chunk_kda(**dict(args, q=view))
    o, _ = fastkda.chunk_kda(**args)
    assert torch.equal(o_view, o)


@pytest.mark.parametrize("n", [1, 7, HOST_LIST_SEQUENCES, HOST_LIST_SEQUENCES + 1, 3000])
def test_cu_seqlens_host_chunks(n):
    """The host offsets' summary (longest sequence and all sequences in 64-token chunks) is the same whether it is
    computed as a list (up to HOST_LIST_SEQUENCES sequences) or by torch; so are the content errors."""
    gen = torch.Generator().manual_seed(n)
    lengths = torch.randint(0, 300, (n,), generator=gen) * torch.randint(0, 2, (n,), generator=gen)  # many empty
    cu = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    T = int(cu[-1])
    want = (-(-int(lengths.max()) // 64), int((lengths + 63).div(64, rounding_mode="floor").sum()))
    for dtype in (torch.int32, torch.int64):
        assert check_cu_seqlens(cu.to(dtype), None, 1, T, torch.device("cpu")) == (n, want)
        assert check_cu_seqlens(cu.to(dtype), cu, 1, T, torch.device("cpu")) == (n, want)
    for bad, pattern in [(cu + 1, "expected to start at 0, got 1"),
                         (torch.cat([cu[:1], cu[1:].flip(0)]), "expected non-decreasing offsets"),
                         (torch.cat([cu[:-1], cu[-1:] + 1]), f"expected to end at T = {T}")]:
        if n == 1 and "non-decreasing" in pattern:
            continue
        with pytest.raises(ValueError, match=pattern):
            check_cu_seqlens(bad, None, 1, T, torch.device("cpu"))
