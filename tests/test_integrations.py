"""The FlashKDA-compatible `fwd` and the fla backend."""

from __future__ import annotations

import logging

import pytest
import torch

import fastkda
from kda_cases import Case, make_inputs, reference, rel_err

fla = pytest.importorskip("fla.ops.kda", reason="flash-linear-attention is not installed (pip install fastkda[fla])")


def flash_kda_args(device, dtype=torch.float32, seqlens=None, T=200, H=2, K=128, V=128):
    args = make_inputs(Case(T=T, H=H, HV=H, K=K, V=V, seqlens=seqlens, v_first=True, h0="fp32"), torch.device(device))
    N = len(seqlens) if seqlens else 1
    out = torch.full_like(args["v"], float("nan"))
    final = torch.full((N, H, V, K), float("nan"), dtype=dtype, device=device)
    return args, out, final


def run_fwd(args, out, final):
    fastkda.fwd(args["q"], args["k"], args["v"], args["g"], args["beta"], args["q"].shape[-1] ** -0.5, out,
                args["A_log"], args["dt_bias"].view(args["v"].shape[2], -1), -5.0,
                initial_state=args["initial_state"].to(final.dtype), final_state=final,
                cu_seqlens=None if args.get("cu_seqlens") is None else args["cu_seqlens"].long())


@pytest.mark.parametrize("seqlens", [None, (70, 0, 130)], ids=["fixed", "varlen"])
def test_flash_kda_fwd_writes_buffers(seqlens):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    args, out, final = flash_kda_args(device, seqlens=seqlens, T=200, K=64, V=64)
    run_fwd(args, out, final)
    o_ref, f_ref, _ = reference({**args, "output_final_state": True, "return_intermediate_states": False})
    assert rel_err(out, o_ref) <= 7e-3 and rel_err(final, f_ref) <= 7e-3


def test_flash_kda_fwd_checks_buffers():
    args, out, final = flash_kda_args("cpu", K=64, V=64)
    with pytest.raises(ValueError, match=r"out: expected a contiguous bfloat16 tensor of shape \(1, 200, 2, 64\)"):
        run_fwd(args, out[:, :100], final)
    with pytest.raises(ValueError, match=r"final_state: expected a contiguous float32 or bfloat16 tensor of shape \(1, 2, 64, 64\)"):
        run_fwd(args, out, final[:, :1])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32-state", "bf16-state"])
def test_flash_kda_fwd_gpu(dtype):
    args, out, final = flash_kda_args("cuda", dtype=dtype, seqlens=(1300, 547, 0, 2048), T=3895)
    run_fwd(args, out, final)
    o_ref, f_ref, _ = reference({**args, "initial_state": args["initial_state"].to(dtype), "output_final_state": True,
                                 "return_intermediate_states": False})
    assert rel_err(out, o_ref) <= 5e-3 and rel_err(final, f_ref) <= (5e-3 if dtype == torch.float32 else 1e-2)


def fla_call(args, **over):
    kw = dict(initial_state=args["initial_state"], output_final_state=True, use_qk_l2norm_in_kernel=True,
              use_gate_in_kernel=True, use_beta_sigmoid_in_kernel=True, safe_gate=True, lower_bound=-5.0,
              A_log=args["A_log"], dt_bias=args["dt_bias"], cu_seqlens=args.get("cu_seqlens"))
    kw.update(over)
    return fla.chunk_kda(args["q"], args["k"], args["v"], args["g"], args["beta"], **kw)


def test_fla_backend_verifier_reasons():
    from fastkda.integrations.fla import verify
    args = make_inputs(Case(T=64, K=64, V=64), torch.device("cpu"))
    q, k, v, g, beta = (args[n] for n in ("q", "k", "v", "g", "beta"))
    assert verify(q, k, v, g, beta)[1] == "fastkda runs on CUDA tensors, got cpu"
    q.requires_grad_(True)
    assert "no backward" in verify(q, k, v, g, beta)[1]
    with torch.no_grad():
        assert "no backward" not in verify(q, k, v, g, beta)[1]


@pytest.mark.gpu
def test_fla_dispatches_to_fastkda_and_matches(caplog):
    import fastkda.integrations.fla as backend
    fastkda.register_fla_backend()
    args = make_inputs(Case(T=2000, H=2, HV=4, K=128, V=128, seqlens=(700, 0, 1300)), torch.device("cuda"))
    args["cu_seqlens"] = args["cu_seqlens"].long()
    with torch.no_grad():  # not inference_mode: fla caches index tensors that a later autograd call reuses
        before = backend.calls
        o, ht = fla_call(args)
        assert backend.calls == before + 1, "fla did not dispatch to fastkda"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("FLA_FASTKDA", "0")                      # opt out: fla's own kernels
            o_fla, ht_fla = fla_call(args)
        assert backend.calls == before + 1
    assert rel_err(o, o_fla.double().cpu()) <= 1e-2 and rel_err(ht, ht_fla.double().cpu()) <= 1e-2
    # a call fastkda cannot serve (gradients needed) runs fla's own path, and fla logs why
    caplog.set_level(logging.INFO)
    q = args["q"].clone().requires_grad_(True)
    before = backend.calls
    with caplog.at_level(logging.INFO, logger="fla.backends"):
        fla_call({**args, "q": q})
    assert backend.calls == before
    assert any("fastkda" in r.getMessage() and "no backward" in r.getMessage() for r in caplog.records) or \
        backend.verify(q, args["k"], args["v"], args["g"], args["beta"])[0] is False
