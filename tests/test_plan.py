"""The split planner (docs/split.md): which shapes it splits, and that it reads the multiprocessor count; the launch
parameters it refuses; which inputs the sm_90 prepare kernel reads, and its divisions by runtime values."""

from __future__ import annotations

import pytest
import torch

from fastkda.forward import (LaunchConfig, divisor_magic, host_slots_pay, late_slices_at_start, overlap_chain,
                             overlap_groups, overlap_pays, overlaps_prepare, plain_prepare_inputs, plan_call, plan_head,
                             planned_path, prefetch_ahead, prepare_inverse_form, prepare_kernel, prepare_places,
                             sm90_reads, state_block_v, v_tile_desc)


def plan(heads: int, tokens: int, slots: int = 132, sm90_transition: bool = False) -> int:
    chunks = tokens // 64
    return planned_path(heads, chunks, chunks, 128, 128, 64, slots, sm90_transition=sm90_transition)[0]


@pytest.mark.parametrize("heads,tokens", [(4, 65536), (8, 32768), (12, 8192), (16, 16384)])
def test_few_heads_long_sequences_split(heads, tokens):
    assert plan(heads, tokens) > 0


@pytest.mark.parametrize("heads,tokens", [(96, 8192), (64, 8192), (32, 8192), (4, 1024)])
def test_many_heads_or_short_sequences_do_not(heads, tokens):
    assert plan(heads, tokens) == 0


@pytest.mark.parametrize("sm90_transition", [False, True], ids=["triton-transition", "gluon-transition"])
def test_choices_measured_best_on_h100(sm90_transition):
    """The segment lengths that measured fastest on an H100 (docs/split.md), with either transition pass (with the
    Gluon one, T=8192 H=12: 2048 tokens 0.201 ms, 1024 0.221, perf-notes v25)."""
    assert [plan(h, t, sm90_transition=sm90_transition) * 64
            for h, t in ((4, 65536), (8, 32768), (16, 16384), (12, 8192))] == [4096, 4096, 4096, 2048]
    # varlen [60000] + 64 x [64], 8 heads: one long sequence among short ones
    assert planned_path(8, 938 + 64 + 64, 938, 128, 128, 64, sm90_transition=sm90_transition)[0] * 64 == 8192


def test_fewer_multiprocessors_split_less():
    assert plan(4, 65536, slots=132) > 0
    assert plan(4, 65536, slots=16) == 0


def test_head_dim_64_splits_where_its_steps_are_cheaper():
    """K = V = 64, 32 heads, T = 8192: on an H100 the state kernel took 0.21 ms unsplit and 0.14-0.15 ms in
    1024- or 2048-token segments (docs/perf-notes.md, v7)."""
    assert planned_path(32, 128, 128, 64, 64, 64)[0] * 64 in (1024, 2048)
    assert planned_path(32, 128, 128, 128, 128, 64)[0] == 0


@pytest.mark.parametrize("heads,tokens,K,split", [
    (32, 8192, 64, False),      # K = V = 64: 0.185 ms overlapped, 0.252 split (H100, perf-notes v40)
    (8, 8192, 64, True),        # K = V = 64: 0.091 split in 1024-token segments, 0.106 overlapped (v40)
    (8, 8192, 128, False),      # 0.136 overlapped (32 columns, whole multiprocessors), 0.143 split (v40)
    (12, 8192, 128, False),     # 0.202 overlapped on whole multiprocessors, 0.231 split (v21)
    (16, 16384, 128, False),    # 0.374 overlapped on whole multiprocessors, 0.498 split (v21)
    (4, 65536, 128, True),      # 0.466 split, 0.839 overlapped (v28)
    (8, 32768, 128, True),      # 0.448 split, 0.458 overlapped with the producer warp (v28; 0.51 and 0.70 in v21)
])
def test_split_against_the_overlapped_path(heads, tokens, K, split):
    """Where the unsplit state pass would run beside the prepare kernel (sm_90, so the Gluon transition pass), the
    planner prices it so."""
    chunks = tokens // 64
    lanes, groups, exclusive, narrow = overlap_groups(heads, heads, chunks, chunks, K, K, 132)
    programs = lanes * K // (32 if narrow else 64)
    assert (planned_path(heads, chunks, chunks, K, K, 64, 132, programs, groups, chunks, exclusive, narrow,
                         sm90_transition=True)[0] > 0) is split
    assert planned_path(heads, chunks, chunks, K, K, 64, 132)[0] > 0           # without the overlap: all split


@pytest.mark.parametrize("heads,tokens,K,pays", [
    (32, 8192, 128, True), (32, 8192, 64, True), (16, 16384, 128, True),
    (64, 8192, 128, True), (96, 8192, 128, True),       # by groups: 0.683 and 1.027 ms, sequential 0.74, 1.15 (v20)
    (8, 32768, 128, True),                              # on whole multiprocessors 0.70 ms, sequential 0.81 (v21)
    (4, 65536, 128, True),                              # 0.839 ms (32 columns), sequential 1.330 (v28; v21: 1.35)
])
def test_overlap_only_where_the_chain_is_short(heads, tokens, K, pays):
    """With 64-column programs (the 32-column ones bring a long chain's step near the plain kernel's: there the
    split path decides, test_split_against_the_overlapped_path)."""
    chunks = tokens // 64
    lanes, groups, exclusive, narrow = overlap_groups(heads, heads, chunks, chunks, K, K, 132, None, False)
    assert overlap_pays(heads, chunks, chunks, K, K, 132, lanes * K // 64, groups, chunks, exclusive) is pays


@pytest.mark.parametrize("heads,tokens,expected,narrow", [
    (12, 8192, True, True),     # the chains bound the call: 0.223 -> 0.202 (v21), 32 columns a program 0.172 (v24)
    (16, 16384, True, False),   # 0.435 -> 0.374 (v21); 64 programs of 32 columns on whole multiprocessors: 0.459
    (32, 8192, False, False), (96, 8192, False, False),  # the prepare kernel does: 0.352 -> 0.506, 1.04 -> 1.53 (v21)
])
def test_state_programs_take_whole_multiprocessors_where_the_chains_bound_the_call(heads, tokens, expected, narrow):
    chunks = tokens // 64
    lanes, groups, exclusive, narrowed = overlap_groups(heads, heads, chunks, chunks, 128, 128, 132)
    assert (exclusive, narrowed) == (expected, narrow)
    if exclusive:      # at most one per four multiprocessors, or one per two of 32 columns
        assert lanes * 2 * 4 <= 132 or narrow and lanes * 4 * 2 <= 132
    assert overlap_groups(heads, heads, chunks, chunks, 128, 128, 132, False)[2:] == (False, False)
    assert overlap_groups(heads, heads, chunks, chunks, 128, 128, 132, None, False)[2:] == (expected, False)


@pytest.mark.parametrize("batch,heads,tokens,K,expected", [
    (1, 32, 8192, 128, (32, 1, False)),     # T=8192 H=32: 64 programs, one chain each
    (1, 64, 8192, 128, (32, 2, False)),     # 0.573 ms; 3 groups of 22 lanes 0.85, 4 of 16 0.99 (v39)
    (1, 96, 8192, 128, (32, 3, False)),     # 0.847 ms; 2 of 48 0.94, 4 of 24 1.24, 5 of 20 1.37 (v39)
    (8, 32, 4096, 128, (32, 8, False)),     # 256 lanes: 1.137 ms; 9 groups of 29 1.182 (v40), 8 of 33 1.16 (v39)
    (8, 128, 2048, 128, (31, 34, False)),   # 1024 lanes: 2.313 ms; 38 groups of 27 2.580 (v40)
    (1, 32, 8192, 64, (32, 1, True)),       # one program per lane at V = 64, on whole multiprocessors: 0.185 ms,
                                            # beside prepare programs 0.215 (v40)
    (1, 64, 8192, 64, (64, 1, False)),      # 0.352 ms; 2 groups of 32 0.423, on whole multiprocessors 0.355 (v40)
    (1, 128, 8192, 64, (43, 3, False)),     # 0.629 ms; 4 of 32 0.850, 2 of 64 0.682, 5 of 26 whole 0.666 (v40)
    (1, 200, 8192, 64, (40, 5, False)),     # 0.962 ms; 4 of 50 0.989, 7 of 29 1.449 (v40)
], ids=["H32", "H64", "H96", "B8-H32", "B8-H128-T2048", "V64-H32", "V64-H64", "V64-H128", "V64-H200"])
def test_overlap_groups_leave_the_prepare_kernel_its_places(batch, heads, tokens, K, expected):
    """Lanes per group, groups and whether each program takes a whole multiprocessor, of the overlapped state kernel:
    at most one program per two multiprocessors (per four on whole ones), the groups of equal size but the last, and
    none empty. The times are whole calls on an H100 with the choice forced (docs/perf-notes.md)."""
    chunks = tokens // 64
    assert overlap_groups(batch * heads, heads, batch * chunks, chunks, K, K, 132) == (*expected, False)
    lanes, groups, exclusive = expected
    assert lanes * K // 64 * (4 if exclusive else 2) <= 132 and (groups - 1) * lanes < batch * heads <= groups * lanes


@pytest.mark.parametrize("kwargs", [dict(transition_stages=1), dict(block_v=48), dict(overlap="yes"),
                                    dict(overlap_exclusive="no"), dict(overlap_narrow=2)],
                         ids=["transition_stages=1", "block_v=48", "overlap=yes", "overlap_exclusive=no",
                              "overlap_narrow=2"])
def test_launch_config_refuses_unverified_settings(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        LaunchConfig(**kwargs)


def test_sm90_reads_16_bit_inputs_as_aligned_pairs():
    """The sm_90 prepare kernel reads 16-bit q, k and g as int32 pairs: 4-byte aligned data and even strides; fp32
    at any alignment. Anything else takes the portable kernel (the GPU tests check the choice on sm_90)."""
    x = torch.zeros(2, 130, 3, 64, dtype=torch.bfloat16)
    assert sm90_reads(x) and sm90_reads(x[:, 1:])
    assert sm90_reads(x.float()[..., 1:]) and sm90_reads(x.float().flatten()[1:])
    assert not sm90_reads(x.flatten()[1:])                                        # 2 bytes past a 4-byte boundary
    odd = torch.zeros(130, 3 * 64 + 1, dtype=torch.float16)[:, :192].unflatten(-1, (3, 64))
    assert not sm90_reads(odd)                                                    # an odd row stride
    assert prepare_kernel(torch.device("cpu"), 128, LaunchConfig(), (x, x, x)).__name__ == "kda_chunk_prepare_kernel"


def test_plain_prepare_inputs_are_the_compiled_ones():
    """bf16 q, k, g and beta, fp32 A_log and dt_bias, 16-byte aligned data and q, k, g strides in multiples of 16:
    the inputs tools/compile_report.py compiles the prepare kernel for."""
    x = torch.zeros(1, 128, 4, 128, dtype=torch.bfloat16)
    beta = torch.zeros(1, 128, 4, dtype=torch.bfloat16)
    a = torch.zeros(4, dtype=torch.float32)
    assert plain_prepare_inputs(x, x, x, beta, a, None) and plain_prepare_inputs(x, x, x, beta, None, None)
    assert not plain_prepare_inputs(x.half(), x.half(), x.half(), beta.half(), a, None)
    assert not plain_prepare_inputs(x, x, x.float(), beta, a, None)
    assert not plain_prepare_inputs(x, x, x, beta, a.bfloat16(), None)
    shifted = torch.zeros(128 * 4 * 128 + 2, dtype=torch.bfloat16)[2:].view(1, 128, 4, 128)
    assert not plain_prepare_inputs(shifted, x, x, beta, a, None)                         # 4 bytes past a 16-byte boundary
    fused = torch.zeros(1, 128, 3 * 4 * 128 + 8, dtype=torch.bfloat16)[..., :512].unflatten(-1, (4, 128))
    assert not plain_prepare_inputs(fused, x, x, beta, a, None)                           # a row stride of 1544


@pytest.mark.parametrize("mode,ready,varlen,K,form", [
    (dict(gate_mode=2, bounded=True, has_a=True, has_bias=True), True, False, 128, (True, True)),   # the benchmark's
    (dict(gate_mode=1, bounded=False, has_a=True, has_bias=True), True, False, 128, (True, False)),     # softplus
    (dict(gate_mode=0, bounded=False, has_a=False, has_bias=False), True, False, 128, (True, False)),   # pre-gated
    (dict(gate_mode=2, bounded=True, has_a=True, has_bias=True), True, True, 128, (True, True)),        # varlen
    (dict(gate_mode=1, bounded=False, has_a=True, has_bias=True), True, True, 128, (True, False)),      # varlen softplus
    (dict(gate_mode=0, bounded=False, has_a=False, has_bias=False), True, True, 128, (False, False)),   # not compiled
    (dict(gate_mode=2, bounded=False, has_a=True, has_bias=True), True, False, 128, (False, False)),    # bound outside
    (dict(gate_mode=1, bounded=False, has_a=True, has_bias=False), True, False, 128, (False, False)),   # no dt_bias
    (dict(gate_mode=2, bounded=True, has_a=True, has_bias=True), True, False, 64, (False, False)),      # K = 64
    (dict(gate_mode=2, bounded=True, has_a=True, has_bias=True), False, False, 128, (False, False)),    # sequential
])
def test_register_inverse_only_where_compiled_asynchronous(mode, ready, varlen, K, form):
    """The inverse's register operands (and, for the lower-bounded variants, beta's late column conversion) only
    in the variants that tools/compile_report.py --check-wgmma compiles (tests/test_compile.py); elsewhere ptxas
    serialized the kernel's products in some variant."""
    kw = dict(ready=ready, varlen=varlen, K=K, l2norm=True, beta_mode=1, plain=True, default_build=True, **mode)
    assert prepare_inverse_form(**kw) == form
    if form[0]:
        for change in (dict(plain=False), dict(default_build=False), dict(l2norm=False), dict(beta_mode=2)):
            assert prepare_inverse_form(**{**kw, **change}) == (False, False)


@pytest.mark.parametrize("groups,shared,gate_mode,bounded,reg_inverse,early", [
    (3, True, 2, True, True, True),         # T=8192 H=96 and the 96-head varlen calls
    (2, True, 2, True, True, True),         # T=8192 H=64
    (1, True, 2, True, True, False),        # one group: the chains bound the call (varlen 256 x 64 at 32 heads)
    (3, False, 2, True, True, False),       # whole multiprocessors
    (3, True, 1, False, True, False),       # softplus
    (3, True, 0, False, True, False),       # pre-gated: ptxas serialized the fixed-length variant
    (3, True, 2, True, False, False),       # not a variant --check-wgmma compiles with it
])
def test_late_slices_at_start_only_where_the_prepare_kernel_bounds(groups, shared, gate_mode, bounded, reg_inverse,
                                                                    early):
    """Slices 2 and 3 are requested at the prepare program's start only beside shared state programs walking two
    groups or more, with the lower-bounded gate's register-inverse variants (tools/compile_report.py compiles them)."""
    assert late_slices_at_start(reg_inverse=reg_inverse, gate_mode=gate_mode, bounded=bounded, groups=groups,
                                shared=shared) is early


@pytest.mark.parametrize("heads,lens,taken", [
    (96, [1024] * 8, True),                             # three groups: the slots past the last chunk sit between them
    (96, [1300, 547, 2048, 963, 271, 3063], True),
    (32, [256] * 64, False),                            # one group: they come last
    (8, [60000] + [64] * 64, False),                    # not overlapped
], ids=["1024x8-H96", "varlen6-H96", "256x64-H32", "60000+64x64-H8"])
def test_host_slots_where_groups_follow(heads, lens, taken):
    """A varlen call takes the host's exact chunk count as its slots only where overlapped state programs walk two
    groups or more (forward.host_slots_pay), and never past the bound or at zero."""
    chunks = sum(-(-n // 64) for n in lens)
    bound = -(-sum(lens) // 64) + len(lens) - 1
    p = plan_call(LaunchConfig(), B=1, N=len(lens), T=sum(lens), HV=heads, K=128, V=128, varlen=True, n_slots=bound,
                  longest_chunks=-(-max(lens) // 64), split_chunks=None, intermediate=False, dtype=torch.bfloat16,
                  sm90_prepare=True, v_tiles=True, gluon_transition=True, slots=132)
    assert host_slots_pay(p, chunks, bound) is taken
    assert not any(host_slots_pay(p, n, bound) for n in (None, 0, bound))


@pytest.mark.parametrize("d", [1, 2, 3, 7, 12, 64, 96, 100, 127, 128, 129, 1000, 4095, 65537, (1 << 20) + 3])
def test_divisor_magic_divides_exactly(d):
    """The sm_90 prepare kernel divides program ids, heads and slots by runtime values through divisor_magic's
    numbers (chunk_prepare_sm90._div: a 32-bit multiply-high of 4 x, then a shift): exact for 0 <= x < 2^30."""
    magic = divisor_magic(d)
    m, shift = magic & 0xFFFFFFFF, (magic >> 32) - 1
    assert m < 1 << 31
    xs = [0, 1, d - 1, d, d + 1, (1 << 30) - 1, (1 << 30) - d] + [q * d + r for q in (1, 5, 1000, (1 << 30) // d - 1)
                                                              for r in (0, d - 1)]
    xs += torch.randint(0, 1 << 30, (2000,), generator=torch.Generator().manual_seed(d)).tolist()
    for x in xs:
        if 0 <= x < 1 << 30:
            assert ((4 * x * m) >> 32) >> shift == x // d, (x, d)


def test_state_kernel_reads_v_by_tiles_where_its_layout_allows():
    """v goes to the state kernel as a tensor descriptor over token rows when batches follow each other and the data
    and token stride are 16-byte aligned (any head stride: a head's columns start anywhere in the row); otherwise
    through pointers (the kernel tests take both: a misaligned case the pointers)."""
    v = torch.zeros(2, 130, 3, 64, dtype=torch.bfloat16)
    d = v_tile_desc(v, 64)
    assert d is not None and list(d.shape) == [260, 192] and list(d.block_shape) == [64, 64]
    fused = torch.zeros(2, 130, 3 * 64 + 3 * 128, dtype=torch.bfloat16)[..., 3 * 128:].unflatten(-1, (3, 64))
    assert v_tile_desc(fused, 64) is not None and list(v_tile_desc(fused, 64).strides) == [576, 1]
    assert v_tile_desc(torch.zeros(130, 3, 65, dtype=torch.bfloat16)[None, ..., 1:], 64) is None  # 2 bytes off
    assert v_tile_desc(v[:, :100], 64) is None                                   # batches 130 tokens apart, not 100
    assert v_tile_desc(v[:1, :100], 64) is not None                              # one batch: any token count
    assert v_tile_desc(v[:, :0], 64) is None                                     # no tokens


@pytest.mark.parametrize("walks,V,split,expected", [
    (32, 128, False, 32),    # T=8192 H=32: 64 programs of 64 columns, 128 of 32 still fit 132 multiprocessors
    (64, 128, False, 64),    # H=64: 128 programs already
    (256, 128, False, 64),   # B=8 H=32
    (32, 64, False, 32),     # K=V=64, H=32
    (67, 64, False, 64),     # 134 programs of 32 columns would not fit
    (4, 128, True, 64),      # the split passes keep 64 (the planner's costs)
], ids=["H32", "H64", "B8-H32", "V64-H32", "V64-H67", "split"])
def test_state_block_v_fills_the_multiprocessors(walks, V, split, expected):
    assert state_block_v(None, walks, V, 132, split) == expected
    assert state_block_v(16, walks, V, 132, split) == 16 and state_block_v(128, walks, 64, 132, split) == 64


def test_overlap_chain_of_a_varlen_lane_walks_every_slot():
    """A fixed-length lane walks its sequence; a varlen lane (a head) every chunk slot of the batch."""
    assert overlap_chain(128, 1024, varlen=False) == 128
    assert overlap_chain(48, 131, varlen=True) == 131


# Varlen layouts measured on an H100 with the overlapped state kernel of v27 (perf-notes v27; the H=16 and H=8 rows
# again in v28, with the producer warp of whole-multiprocessor programs): heads, sequence lengths, ms overlapped and
# ms with the state kernel after the prepare kernel. Where they differ by more than 3% the planner must take the
# faster.
VARLEN_MEASURED = [
    (96, [8192], 0.954, 1.089), (96, [4096] * 2, 0.958, 1.042), (96, [1024] * 8, 0.989, 1.085),
    (96, [512] * 16, 1.015, 1.124), (96, [256] * 32, 1.083, 1.219), (96, [128] * 64, 1.253, 1.495),
    (96, [64] * 64, 0.860, 1.028), (96, [64] * 256, 3.575, 3.972), (96, [4000] + [64] * 64, 1.297, 1.508),
    (96, [100] * 40, 0.750, 0.923), (64, [512] * 16, 0.672, 0.764), (64, [256] * 32, 0.718, 0.825),
    (64, [2048] * 4 + [0] * 4, 0.662, 0.724), (32, [512] * 32, 0.662, 0.759), (32, [256] * 64, 0.703, 0.820),
    (32, [128] * 128, 0.808, 1.007), (32, [64] * 1024, 4.796, 5.235), (32, [1] * 256, 0.943, 1.230),
    (32, [17] * 300, 1.147, 1.475), (16, [128] * 128, 0.669, 0.521), (8, [64] * 512, 1.230, 0.694),
]


@pytest.mark.parametrize("heads,lens,overlapped_ms,after_ms", VARLEN_MEASURED,
                         ids=[f"H{h}-{len(s)}seq-{max(s)}" for h, s, _, _ in VARLEN_MEASURED])
def test_overlap_pays_where_measured_faster(heads, lens, overlapped_ms, after_ms):
    n_slots = -(-sum(lens) // 64) + len(lens) - 1
    longest = max(1, -(-max(lens) // 64))
    chain = overlap_chain(longest, n_slots, varlen=True)
    lanes, groups, exclusive, narrow = overlap_groups(heads, heads, n_slots, chain, 128, 128, 132, walks=len(lens))
    programs = lanes * (128 // (32 if narrow else 64))
    pays = overlap_pays(heads, n_slots, longest, 128, 128, 132, programs, groups, chain, exclusive, narrow, len(lens))
    if abs(overlapped_ms / after_ms - 1) > 0.03:
        assert pays is (overlapped_ms < after_ms)


OVERLAP_BASE = dict(sm90_prepare=True, varlen=False, intermediate=False, B=1, T=8192, K=128, V=128,
                    dtype=torch.bfloat16, v_tiles=True, slots=132)


@pytest.mark.parametrize("change,expected", [
    ({}, True),                                         # T=8192: any number of heads, by groups
    ({"slots": 3}, False),                              # the two programs of a lane need four multiprocessors
    ({"sm90_prepare": False}, False),                   # only the sm_90 prepare kernel sets the ready flags
    ({"varlen": True}, True), ({"intermediate": True}, False),
    ({"B": 2, "T": 4000}, False),                       # o tiles would cross into a sequence another program writes
    ({"B": 2, "T": 4096}, True), ({"B": 1, "T": 4000}, True), ({"T": 0}, False),
    ({"dtype": torch.float32}, False), ({"dtype": torch.float16}, True),
    ({"v_tiles": False}, False), ({"K": 64, "V": 64}, True),
], ids=lambda x: str(x))
def test_state_kernel_overlaps_prepare_where_both_fit(change, expected):
    assert overlaps_prepare(LaunchConfig(), **{**OVERLAP_BASE, **change}) is expected
    assert overlaps_prepare(LaunchConfig(overlap=True), **{**OVERLAP_BASE, **change}) is expected
    assert not overlaps_prepare(LaunchConfig(overlap=False), **{**OVERLAP_BASE, **change})


@pytest.mark.parametrize("programs,exclusive,expected", [(0, False, 198), (64, False, 150), (32, True, 150),
                                                        (48, True, 126)],
                         ids=["alone", "64-shared", "32-whole", "48-narrow-whole"])
def test_prefetch_ahead_follows_the_prepare_kernels_places(programs, exclusive, expected):
    """Three quarters of the prepare programs' places on an H100: alone (T=32768 H=8, split), beside 64 shared state
    programs (T=8192 H=96) or 32 whole-multiprocessor ones (T=16384 H=16), beside 48 narrow ones (T=8192 H=12)."""
    assert prefetch_ahead(prepare_places(132, programs, exclusive)) == expected


def head_plan(heads: int, tokens: int, K: int = 128) -> tuple[int, int]:
    """(head chunks, the rest's chunks per segment) as the forward plans one bf16 sequence of `tokens` on an H100."""
    plan = plan_call(LaunchConfig(), B=1, N=1, T=tokens, HV=heads, K=K, V=K, varlen=False, n_slots=tokens // 64,
                     longest_chunks=tokens // 64, split_chunks=None, intermediate=False, dtype=torch.bfloat16,
                     sm90_prepare=True, v_tiles=True, gluon_transition=True, slots=132)
    return plan.head, plan.ncs


@pytest.mark.parametrize("heads,tokens,K,taken", [
    (8, 32768, 128, True),      # 0.437 -> 0.396 ms (H100, perf-notes v41)
    (4, 65536, 128, True),      # 0.452 -> 0.437
    (8, 16384, 128, True),      # 0.243 -> 0.228
    (8, 32768, 64, True),       # 0.270 -> 0.248
    (8, 65536, 128, True),      # 0.820 -> 0.754
    (4, 16384, 128, False),     # 0.154 -> 0.157 with a head
    (1, 65536, 128, False),     # 0.197 -> 0.207
    (2, 32768, 64, False),      # 0.108 -> 0.111
    (2, 65536, 128, False),     # 0.279 -> 0.278
    (2, 131072, 128, False),    # 0.474 either way
    (16, 16384, 128, False),    # overlapped, 0.297 ms: no split to take a head from
    (8, 8192, 128, False),      # overlapped, 0.135 ms (a head: 0.148)
])
def test_head_where_measured_faster(heads, tokens, K, taken):
    assert (head_plan(heads, tokens, K)[0] > 0) == taken


@pytest.mark.parametrize("heads,tokens", [(8, 32768), (4, 65536), (8, 16384), (8, 65536)])
def test_head_rest_in_one_wave(heads, tokens):
    """Behind a head the rest's segments fill each split pass in one wave: the output pass's programs (one a
    multiprocessor) and the transition pass's (two). T=32768 H=8 behind 160 chunks in 9 segments of 40: 0.457 ms;
    behind 192 in 8: 0.408 (perf-notes v41)."""
    head, ncs = head_plan(heads, tokens)
    segments = -(-(tokens // 64 - head) // ncs)
    assert segments * heads * 2 <= 132 and (segments - 1) * heads * 4 <= 264


def test_head_forced():
    assert plan_head(8, 512, 128, 128, 64, head=100)[0] == 100
    assert plan_head(8, 512, 128, 128, 64, head=600)[0] == 511          # at least a chunk is left to the rest
    assert plan_head(8, 512, 128, 128, 64, exclusive=False)[2] is False
    with pytest.raises(ValueError, match="split_head"):
        LaunchConfig(split_head=-1)
