"""playbook/kernels/few_query_attention.py against its reference: odd lengths, GQA groups, every mask kind, soft caps."""
import pytest
import torch

from playbook.kernels import few_query_attention as fq
from playbook.kernels import reference as ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2}


def inputs(b, h, kvh, lq, lk, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple((torch.randn(*s, generator=g) * 1.5).to(device=DEVICE, dtype=dtype)
                 for s in ((b, h, lq, d), (b, kvh, lk, d), (b, kvh, lk, d)))


def close(got, want, dtype):
    assert got.shape == want.shape and torch.isfinite(got).all()
    err = (got.float() - want.float()).abs().max().item()
    assert err <= TOL[dtype] * max(1.0, want.float().abs().max().item()), err


def pi0_mask(lq, lk, pad=5):
    """pi0's suffix mask: the prefix minus `pad` padded slots, then the suffix block where the first (state)
    token does not see the rest."""
    allowed = torch.ones(1, 1, lq, lk, dtype=torch.bool)
    prefix = lk - lq
    allowed[..., prefix - pad:prefix] = False
    allowed[0, 0, 0, prefix + 1:] = False
    return allowed.to(DEVICE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("b,h,kvh,lq,lk,d", [(1, 8, 1, 11, 200, 32), (2, 4, 2, 3, 77, 16), (1, 2, 2, 16, 64, 24),
                                             (1, 6, 3, 1, 129, 64)])
@pytest.mark.parametrize("chunk_blocks", [1, 2, 5])
def test_matches_the_reference_with_a_boolean_mask(b, h, kvh, lq, lk, d, dtype, chunk_blocks):
    q, k, v = inputs(b, h, kvh, lq, lk, d, dtype)
    mask = pi0_mask(lq, lk).expand(b, 1, lq, lk) if lq > 1 else None
    close(fq.few_query_attention(q, k, v, mask, chunk_blocks=chunk_blocks), ref.few_query_attention(q, k, v, mask),
          dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_additive_per_head_masks_scale_and_softcap(dtype):
    q, k, v = inputs(1, 4, 2, 7, 150, 32, dtype, seed=1)
    g = torch.Generator().manual_seed(2)
    allowed = torch.rand(1, 4, 7, 150, generator=g) > 0.3
    allowed[..., 0] = True                                                 # every row sees something
    additive = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min).to(DEVICE, dtype)
    for mask in (allowed.to(DEVICE), additive):
        got = fq.few_query_attention(q, k, v, mask, scale=0.1, softcap=5.0, chunk_blocks=1)
        close(got, ref.few_query_attention(q, k, v, mask, scale=0.1, softcap=5.0), dtype)


@pytest.mark.parametrize("combine", fq.COMBINES)
def test_a_row_with_every_slot_masked_gives_zeros_and_the_others_are_untouched(combine):
    q, k, v = inputs(1, 2, 1, 4, 140, 16, torch.float32)
    mask = torch.ones(1, 1, 4, 140, dtype=torch.bool, device=DEVICE)
    mask[..., 2, :] = False
    got = fq.few_query_attention(q, k, v, mask, chunk_blocks=1, combine=combine)
    assert (got[:, 2] == 0).all()
    close(got, ref.few_query_attention(q, k, v, mask), torch.float32)


@pytest.mark.parametrize("block_m", [16, 32, 128])
@pytest.mark.parametrize("b,h,kvh,lq,lk,d", [(1, 8, 1, 11, 97, 40), (2, 6, 2, 5, 45, 16), (1, 3, 1, 7, 130, 24)])
def test_row_tiles_that_cut_across_query_heads(b, h, kvh, lq, lk, d, block_m):
    """A K/V head's (query head, query) rows are packed into tiles of block_m: a tile may end inside a head
    (88 rows in 16-row tiles), hold several heads, or be mostly padding; each row finds its head, its query and
    its mask row, and the combine puts it back at [b, query, head]."""
    q, k, v = inputs(b, h, kvh, lq, lk, d, torch.float32, seed=4)
    g = torch.Generator().manual_seed(5)
    allowed = torch.rand(b, h, lq, lk, generator=g) > 0.4
    allowed[..., 1] = True
    mask = allowed.to(DEVICE)
    close(fq.few_query_attention(q, k, v, mask, block_m=block_m, block_n=16),
          ref.few_query_attention(q, k, v, mask), torch.float32)


def test_one_chunk_writes_the_output_without_a_combine():
    q, k, v = inputs(1, 4, 2, 3, 50, 16, torch.float32, seed=6)
    assert fq.launch(6, 50, 16, block_n=64)["splits"] == 1
    close(fq.few_query_attention(q, k, v, block_n=64), ref.few_query_attention(q, k, v), torch.float32)


def test_a_long_kv_gets_longer_chunks_not_more_than_max_splits():
    at = fq.launch(88, 100_000, 256)
    assert at["splits"] <= fq.MAX_SPLITS and at["chunk"] == at["block_n"] * at["chunk_blocks"]
    assert at["splits"] * at["chunk"] >= 100_000
    q, k, v = inputs(1, 2, 1, 2, 1100, 16, torch.float32, seed=7)
    assert fq.launch(4, 1100, 16, block_n=16)["chunk_blocks"] == 2          # 69 blocks of 16: two a chunk
    close(fq.few_query_attention(q, k, v, block_n=16), ref.few_query_attention(q, k, v), torch.float32)


def test_repeated_calls_with_other_data_are_right_too():
    for seed in (0, 1, 2):
        q, k, v = inputs(1, 8, 1, 11, 300, 32, torch.float32, seed=seed)
        close(fq.few_query_attention(q, k, v, chunk_blocks=1), ref.few_query_attention(q, k, v), torch.float32)


def test_strided_inputs_are_read_in_place():
    """HF hands attention q after a transpose: [B, H, L, D] views of a [B, L, H, D] tensor."""
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1, 11, 8, 32, generator=g).to(DEVICE).transpose(1, 2)
    k, v = (torch.randn(1, 90, 1, 32, generator=g).to(DEVICE).transpose(1, 2) for _ in range(2))
    close(fq.few_query_attention(q, k, v), ref.few_query_attention(q, k, v), torch.float32)


def test_calls_it_cannot_take_say_why():
    q, k, v = inputs(1, 8, 1, 17, 64, 32, torch.float32)
    assert "17 queries" in fq.takes(q, k)
    q, k, v = inputs(1, 6, 4, 2, 64, 32, torch.float32)
    assert "multiple" in fq.takes(q, k)
    q, k, v = inputs(1, 4, 1, 2, 64, 32, torch.float32)
    assert "mask" in fq.takes(q, k, torch.ones(1, 1, 2, 63, dtype=torch.bool))
    with pytest.raises(ValueError, match="kernels.few_query_attention: a mask"):
        fq.few_query_attention(q, k, v, torch.ones(1, 1, 2, 63, dtype=torch.bool, device=DEVICE))


def test_it_compiles_as_one_opaque_op():
    q, k, v = inputs(1, 4, 1, 5, 70, 16, torch.float32)
    mask = pi0_mask(5, 70)
    fn = torch.compile(lambda q, k, v, m: fq.few_query_attention(q, k, v, m) * 2.0, backend="aot_eager")
    close(fn(q, k, v, mask), 2.0 * ref.few_query_attention(q, k, v, mask), torch.float32)


@pytest.mark.parametrize("b,h,kvh,lq,lk,d,block_m", [(1, 8, 1, 11, 200, 32, 16), (2, 4, 2, 3, 77, 16, 16),
                                                     (1, 3, 1, 7, 130, 24, 32)])
def test_the_last_program_of_a_tile_combines_as_the_second_launch_does(b, h, kvh, lq, lk, d, block_m):
    q, k, v = inputs(b, h, kvh, lq, lk, d, torch.float32, seed=8)
    mask = pi0_mask(lq, lk).expand(b, 1, lq, lk)
    want = ref.few_query_attention(q, k, v, mask)
    for _ in range(2):              # a second call finds its counters back at zero
        got = fq.few_query_attention(q, k, v, mask, block_n=16, block_m=block_m, combine="last")
        close(got, want, torch.float32)
        torch.testing.assert_close(got, fq.few_query_attention(q, k, v, mask, block_n=16, block_m=block_m,
                                                               combine="launch"), atol=1e-5, rtol=1e-5)


def test_an_unknown_combine_says_which_there_are():
    q, k, v = inputs(1, 2, 1, 2, 40, 16, torch.float32)
    with pytest.raises(ValueError, match="combine 'atomic' is not one of"):
        fq.few_query_attention(q, k, v, combine="atomic")


def rope_inputs(tokens, h, kvh, d, slots, start, dtype, seed=0, fused_qkv=False):
    """The projections' q [L, H, D], k, v [L, KVH, D] (views of one fused q/k/v output where fused_qkv), cos and
    sin [L, D], and caches [1, KVH, slots, D] full of other values (what an earlier step left there)."""
    g = torch.Generator().manual_seed(seed)
    if fused_qkv:
        qkv = torch.randn(tokens, (h + 2 * kvh) * d, generator=g)
        q, k, v = (t.view(tokens, -1, d) for t in qkv.split([h * d, kvh * d, kvh * d], -1))
    else:
        q, k, v = torch.randn(tokens, h, d, generator=g), torch.randn(tokens, kvh, d, generator=g), \
            torch.randn(tokens, kvh, d, generator=g)
    angle = torch.rand(tokens, d // 2, generator=g) * 6.0
    cos, sin = (torch.cat([f(angle)] * 2, -1) for f in (torch.cos, torch.sin))
    caches = [torch.randn(1, kvh, slots, d, generator=g) for _ in range(2)]
    return tuple(t.to(device=DEVICE, dtype=dtype) for t in (q, k, v, cos, sin, *caches))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tokens,h,kvh,d,slots,start", [(11, 8, 1, 32, 200, 180), (3, 4, 2, 16, 77, 60),
                                                        (5, 6, 3, 24, 130, 62), (1, 2, 1, 64, 64, 0),
                                                        (16, 2, 2, 16, 100, 84)])
def test_rope_then_attention_in_its_launches_matches_rope_append_rows_then_attention(tokens, h, kvh, d, slots,
                                                                                     start, dtype):
    """Odd heads and lengths, new tokens that straddle two chunks of 64 slots (start 62), fill the cache's end or
    its start; the caches hold other values where the new tokens go. The output and both caches match the
    reference (rope_append_rows, then few_query_attention over the caches)."""
    q, k, v, cos, sin, kc, vc = rope_inputs(tokens, h, kvh, d, slots, start, dtype, fused_qkv=(kvh == 1))
    mask = pi0_mask(tokens, slots, pad=3) if start >= tokens + 3 else None
    kc_ref, vc_ref = kc.clone(), vc.clone()
    want = ref.rope_few_query_attention(q, k, v, cos, sin, kc_ref, vc_ref, start, mask)
    got = fq.rope_few_query_attention(q, k, v, cos, sin, kc, vc, start, mask)
    close(got, want, dtype)
    assert got.shape == (1, tokens, h, d)
    torch.testing.assert_close(kc, kc_ref, atol=TOL[dtype], rtol=TOL[dtype])
    assert torch.equal(vc, vc_ref)


def test_rope_attention_with_an_additive_mask_a_scale_and_a_soft_cap_and_again_on_new_tokens():
    q, k, v, cos, sin, kc, vc = rope_inputs(7, 4, 2, 32, 150, 140, torch.float32, seed=4)
    g = torch.Generator().manual_seed(5)
    allowed = torch.rand(1, 4, 7, 150, generator=g) > 0.3
    allowed[..., 0] = True
    additive = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min).to(DEVICE)
    for seed in (4, 6):             # a second step writes its own tokens over the first's
        q, k, v, cos, sin, _, _ = rope_inputs(7, 4, 2, 32, 150, 140, torch.float32, seed=seed)
        kc_ref, vc_ref = kc.clone(), vc.clone()
        want = ref.rope_few_query_attention(q, k, v, cos, sin, kc_ref, vc_ref, 140, additive, 0.1, 5.0)
        close(fq.rope_few_query_attention(q, k, v, cos, sin, kc, vc, 140, additive, scale=0.1, softcap=5.0),
              want, torch.float32)
        torch.testing.assert_close(kc, kc_ref, atol=1e-5, rtol=1e-5)


def test_rope_attention_calls_it_cannot_take_say_why():
    q, k, v, cos, sin, kc, vc = rope_inputs(4, 2, 1, 16, 40, 30, torch.float32)
    assert "do not fit" in fq.rope_takes(q, k, v, cos, sin, kc, vc, 38)
    assert "cos and sin" in fq.rope_takes(q, k, v, cos[:, :8], sin, kc, vc, 30)
    assert "17 queries" in fq.rope_takes(*rope_inputs(17, 2, 1, 16, 40, 20, torch.float32), 20)
    with pytest.raises(ValueError, match="kernels.rope_few_query_attention: 4 tokens from slot 38"):
        fq.rope_few_query_attention(q, k, v, cos, sin, kc, vc, 38)


def test_rope_attention_compiles_as_one_opaque_op_that_writes_the_caches():
    q, k, v, cos, sin, kc, vc = rope_inputs(5, 4, 1, 16, 70, 60, torch.float32, seed=9)
    mask = pi0_mask(5, 70)
    kc_ref, vc_ref = kc.clone(), vc.clone()
    want = ref.rope_few_query_attention(q, k, v, cos, sin, kc_ref, vc_ref, 60, mask)
    fn = torch.compile(lambda *a: fq.rope_few_query_attention(*a, 60, mask) * 2.0, backend="aot_eager")
    close(fn(q, k, v, cos, sin, kc, vc), 2.0 * want, torch.float32)
    torch.testing.assert_close(kc, kc_ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(vc, vc_ref)
