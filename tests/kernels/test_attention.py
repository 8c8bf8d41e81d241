import pytest
import torch

from hymba.kernels.attention import MaskSpec, attention, attention_naive, attention_sdpa, build_mask


def brute_force_mask(T, M, window):
    """Index-by-index statement of the rule: causal AND (inside window OR key is a meta token)."""
    m = torch.zeros(T, T, dtype=torch.bool)
    for i in range(T):
        for j in range(T):
            inside = window is None or i - j <= window - 1
            m[i, j] = j <= i and (inside or j < M)
    return m


def plain_spec(B, T, M, window):
    pos = torch.arange(T).expand(B, T)
    return MaskSpec(pos, pos, pos < M, None, window, M)


@pytest.mark.parametrize("T,M,window", [(1, 0, None), (10, 0, None), (17, 0, 4), (17, 3, 4), (20, 5, 1), (9, 2, 100)])
def test_mask_equals_brute_force(T, M, window):
    got = build_mask(plain_spec(2, T, M, window))
    assert got.shape == (2, 1, T, T)
    assert torch.equal(got[0, 0], brute_force_mask(T, M, window))


def test_window_convention_query_sees_itself_and_w_minus_1_before():
    m = build_mask(plain_spec(1, 10, 0, 3))[0, 0]
    assert m[9].nonzero().flatten().tolist() == [7, 8, 9]


def test_padding_keys_are_never_attended_and_pad_queries_stay_finite():
    pos = torch.tensor([[0, 0, 0, 1, 2]])
    valid = torch.tensor([[False, False, True, True, True]])
    spec = MaskSpec(pos, pos, torch.zeros_like(valid), valid, None, None)
    m = build_mask(spec)[0, 0]
    assert not m[2:, :2].any()
    q, k, v = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    assert torch.isfinite(attention_sdpa(q, k, v, spec)).all()


@pytest.mark.parametrize("window", [5, None])
@pytest.mark.parametrize("H,Hkv,Dk,Dv", [(4, 4, 8, 8), (4, 2, 8, 16), (6, 1, 4, 12)])
def test_sdpa_matches_naive_with_gqa_and_wide_values(H, Hkv, Dk, Dv, window):
    B, T, M = 2, 19, 3
    q, k, v = torch.randn(B, H, T, Dk), torch.randn(B, Hkv, T, Dk), torch.randn(B, Hkv, T, Dv)
    spec = plain_spec(B, T, M, window)
    torch.testing.assert_close(attention(q, k, v, spec), attention_naive(q, k, v, spec), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("M", [0, 3])
def test_a_plain_global_layer_runs_sdpa_causal_without_a_mask(M, monkeypatch):
    # [meta][tokens] at positions 0, 1, ... with no window and no padding is plain causal attention: SDPA's
    # is_causal, no [T, T] mask built; outputs and gradients as the masked oracle's
    import hymba.kernels.attention.ref as ref

    B, H, Hkv, T, D = 2, 4, 2, 23, 8
    spec = plain_spec(B, T, M, None)
    q, k, v = (torch.randn(B, h, T, D, requires_grad=True) for h in (H, Hkv, Hkv))
    want = attention_naive(q, k, v, spec)
    want_grads = torch.autograd.grad(want.square().sum(), (q, k, v))
    monkeypatch.setattr(ref, "build_mask", lambda s: pytest.fail("a mask was built for a plain global layer"))
    got = attention_sdpa(q, k, v, spec)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(torch.autograd.grad(got.square().sum(), (q, k, v)), want_grads):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("H,Hkv", [(4, 2), (6, 1), (4, 4)])
def test_one_query_per_row_with_grouped_heads_matches_naive(H, Hkv):
    # a decode step: one query at a different position per row, keys out of order (a ring) and some invalid
    B, S, D = 3, 11, 8
    q, k, v = torch.randn(B, H, 1, D), torch.randn(B, Hkv, S, D), torch.randn(B, Hkv, S, 2 * D)
    k_pos = torch.stack([torch.randperm(S) for _ in range(B)])
    valid = torch.rand(B, S) > 0.3
    spec = MaskSpec(torch.tensor([[10], [6], [3]]), k_pos, k_pos < 2, valid, 4)
    torch.testing.assert_close(attention(q, k, v, spec), attention_naive(q, k, v, spec), rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("T,M,window", [(256, 0, None), (300, 16, 64), (512, 128, 256)])
def test_flex_matches_sdpa(T, M, window):
    B, H, Hkv, Dk, Dv = 2, 8, 2, 64, 128
    g = dict(device="cuda", dtype=torch.bfloat16)
    q, k, v = torch.randn(B, H, T, Dk, **g), torch.randn(B, Hkv, T, Dk, **g), torch.randn(B, Hkv, T, Dv, **g)
    pos = torch.arange(T, device="cuda").expand(B, T)
    spec = MaskSpec(pos, pos, pos < M, None, window, M)
    torch.testing.assert_close(
        attention(q, k, v, spec, backend="flex").float(), attention_naive(q, k, v, spec).float(), rtol=2e-2, atol=2e-2
    )


def _grads(backend, q, k, v, spec):
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    out = attention(q, k, v, spec, backend=backend)
    out.float().square().sum().backward()
    return out, q.grad, k.grad, v.grad


@pytest.mark.gpu
@pytest.mark.parametrize("T", [64, 128, 192])
def test_auto_attention_trains_short_gqa_sliding_window_sequences(T):
    # MQAR's short curriculum settings: flex's backward did not compile below one 128-token block with GQA
    B, H, Hkv, D = 4, 16, 4, 64
    g = dict(device="cuda", dtype=torch.bfloat16)
    q, k, v = torch.randn(B, H, T, D, **g), torch.randn(B, Hkv, T, D, **g), torch.randn(B, Hkv, T, D, **g)
    pos = torch.arange(T, device="cuda").expand(B, T)
    spec = MaskSpec(pos, pos, pos < 0, None, 48, 0)
    for got, want in zip(_grads("auto", q, k, v, spec), _grads("sdpa", q, k, v, spec)):  # two bf16 kernels
        torch.testing.assert_close(got.float(), want.float(), rtol=3e-2, atol=6e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("Hkv,Dv", [(8, 64), (2, 64), (2, 128)])
def test_sdpa_causal_path_trains_as_flex_on_cuda(Hkv, Dv):
    # a global layer in the plain layout runs SDPA's is_causal (flash where the head dims are equal): outputs
    # and gradients as flex's, meta tokens leading, with grouped heads and a wider V
    B, H, T, M, Dk = 2, 8, 320, 16, 64
    g = dict(device="cuda", dtype=torch.bfloat16)
    q, k, v = torch.randn(B, H, T, Dk, **g), torch.randn(B, Hkv, T, Dk, **g), torch.randn(B, Hkv, T, Dv, **g)
    pos = torch.arange(T, device="cuda").expand(B, T)
    spec = MaskSpec(pos, pos, pos < M, None, None, M)
    for got, want in zip(_grads("sdpa", q, k, v, spec), _grads("flex", q, k, v, spec)):  # two bf16 kernels
        torch.testing.assert_close(got.float(), want.float(), rtol=3e-2, atol=6e-2)


@pytest.mark.gpu
def test_auto_runs_global_layers_on_sdpa_when_global_causal_says_so(monkeypatch):
    import hymba.kernels.attention as A

    monkeypatch.setattr(A, "GLOBAL_CAUSAL", "sdpa")
    windows, real = [], A.attention_sdpa
    monkeypatch.setattr(A, "attention_sdpa", lambda q, k, v, spec: windows.append(spec.window) or real(q, k, v, spec))
    B, H, Hkv, T, M, D = 2, 8, 2, 256, 16, 64
    g = dict(device="cuda", dtype=torch.bfloat16)
    q, k, v = torch.randn(B, H, T, D, **g), torch.randn(B, Hkv, T, D, **g), torch.randn(B, Hkv, T, D, **g)
    pos = torch.arange(T, device="cuda").expand(B, T)
    for window in (None, 64):  # the global layer on sdpa, the sliding-window one still on flex
        spec = MaskSpec(pos, pos, pos < M, None, window, M)
        torch.testing.assert_close(
            attention(q, k, v, spec).float(), attention_naive(q, k, v, spec).float(), rtol=2e-2, atol=2e-2
        )
    assert windows == [None]


@pytest.mark.gpu
def test_auto_attention_falls_back_to_sdpa_when_flex_fails_to_compile(monkeypatch, caplog):
    import torch._inductor.exc

    import hymba.kernels.attention as A
    import hymba.kernels.attention.flex as flex_mod

    def broken(*a, **kw):
        raise torch._inductor.exc.InductorError(RuntimeError("no valid choices"), None)

    monkeypatch.setattr(flex_mod, "attention_flex", broken)
    monkeypatch.setattr(A, "GLOBAL_CAUSAL", "flex")  # a global layer asked to try flex first (default: sdpa)
    B, H, T, D = 2, 4, 256, 64
    g = dict(device="cuda", dtype=torch.bfloat16)
    q, k, v = (torch.randn(B, H, T, D, **g) for _ in range(3))
    pos = torch.arange(T, device="cuda").expand(B, T)
    spec = MaskSpec(pos, pos, pos < 0, None, None, 0)
    with caplog.at_level("WARNING", logger="hymba.kernels"):
        torch.testing.assert_close(attention(q, k, v, spec), attention(q, k, v, spec, backend="sdpa"))
    assert "flex failed" in caplog.text
    with pytest.raises(torch._inductor.exc.InductorError):  # asked for by name: the error, not a fallback
        attention(q, k, v, spec, backend="flex")


@pytest.mark.gpu
@pytest.mark.parametrize("T,Hkv", [(64, 4), (192, 4), (64, 1)])
def test_sdpa_backward_stays_finite_when_every_logit_is_very_negative(T, Hkv):
    # pytorch/pytorch#196678: with a mask, T % 128 == 64 and a row logsumexp below -88.7, cuDNN's backward
    # (the default SDPA kernel on an H200, torch 2.11) returns NaN in dQ. It broke 7 seed MQAR rows.
    B, H, D = 2, 4, 64
    g = dict(device="cuda", dtype=torch.bfloat16)
    q, k, v = torch.randn(B, H, T, D, **g) * 0.1, torch.randn(B, Hkv, T, D, **g) * 0.1, torch.randn(B, Hkv, T, D, **g)
    q[..., 0], k[..., 0] = 1.0, -120 * D**0.5  # every logit about -120
    pos = torch.arange(T, device="cuda").expand(B, T)
    spec = MaskSpec(pos, pos, pos < 0, None, None, 0)

    def grads(fn):
        qq, kk, vv = (t.detach().requires_grad_() for t in (q, k, v))
        out = fn(qq, kk, vv, spec)
        out.float().mul(torch.linspace(-1, 1, D, device="cuda")).sum().backward()
        return out, qq.grad, kk.grad, vv.grad

    got, want = grads(attention_sdpa), grads(attention_naive)
    assert all(torch.isfinite(t).all() for t in got)  # dQ was NaN through cuDNN
    # dQ = dS K with k[..., 0] = -960 amplifies any bf16 kernel's rounding of dS past the fp32 oracle (the
    # memory-efficient kernel: 2.0 against values of 0.17, itself exact to 0.003 in fp32), so dQ is checked finite only
    for i in (0, 2, 3):  # output, dK, dV
        torch.testing.assert_close(
            got[i].float(), want[i].float(), rtol=3e-2, atol=3e-2 * (1 + want[i].abs().max().item())
        )


def test_auto_takes_flex_only_where_dispatch_would():
    """The rule generate's memory estimate shares with the dispatch (no CUDA needed to ask it)."""
    from hymba.kernels.attention import FLEX_BLOCK, auto_takes_flex

    assert auto_takes_flex("cuda", True, 64, 128, FLEX_BLOCK)
    assert not auto_takes_flex("cpu", True, 64, 128, FLEX_BLOCK)
    assert not auto_takes_flex("cuda", False, 64, 128, FLEX_BLOCK)  # padded batch
    assert not auto_takes_flex("cuda", True, 96, 128, FLEX_BLOCK)  # head dim flex cannot serve
    assert not auto_takes_flex("cuda", True, 64, 64, FLEX_BLOCK - 1)  # shorter than one block


def test_flex_by_name_refuses_head_dims_it_cannot_compile():
    """Asked for by name with head dim 8: one error naming the dims, not an Inductor lowering traceback."""
    from hymba.kernels import BackendUnavailable

    q = k = v = torch.randn(1, 2, 16, 8)
    with pytest.raises(BackendUnavailable, match=r"head dims in \(16, 32, 64, 128\), got 8/8"):
        attention(q, k, v, plain_spec(1, 16, 0, None), backend="flex")


def test_flex_forward_tiles_for_a_wide_value_head_on_sm90_only():
    from hymba.kernels.attention.flex import WIDE_V_FWD_OPTIONS, fwd_kernel_options

    assert fwd_kernel_options(64, 128, (9, 0)) == WIDE_V_FWD_OPTIONS  # the released layout on an H100/H200
    assert all(k.startswith("fwd_") for k in WIDE_V_FWD_OPTIONS)  # the backward keeps flex's own tiles
    assert fwd_kernel_options(64, 64, (9, 0)) is None  # measured equal: flex's default
    assert fwd_kernel_options(64, 128, (8, 0)) is None  # not measured there
    assert fwd_kernel_options(64, 128, None) is None  # not a CUDA device


def test_attention_flex_passes_the_forward_options_for_its_device(monkeypatch):
    import hymba.kernels.attention.flex as flex_mod

    seen = []

    def fake_flex(q, k, v, **kw):
        seen.append(kw)
        return torch.zeros(q.shape[:-1] + v.shape[-1:])

    monkeypatch.setattr(flex_mod, "_compiled", lambda: fake_flex)
    monkeypatch.setattr(flex_mod, "block_mask", lambda *a: "mask")
    monkeypatch.setattr(flex_mod, "_capability", lambda device: (9, 0))
    q, k = torch.randn(1, 4, 8, 64), torch.randn(1, 2, 8, 64)
    for dv in (128, 64):
        flex_mod.attention_flex(q, k, torch.randn(1, 2, 8, dv), plain_spec(1, 8, 0, None))
    assert seen[0]["kernel_options"] == flex_mod.WIDE_V_FWD_OPTIONS and seen[0]["enable_gqa"]
    assert seen[1]["kernel_options"] is None


def _flex_loss_and_grads(flex_mod, spec, compiled: bool) -> list:
    """The loss sum(attention_flex(q, k, v)^2) of fixed inputs (B2, 4 query heads, 2 KV heads, T12, V dim 16),
    eager or under torch.compile(fullgraph) (dynamo reset first), with the gradients of q, k, v: [loss, dq, dk,
    dv]."""
    torch.manual_seed(0)
    qkv = [torch.randn(2, 4, 12, 8), torch.randn(2, 2, 12, 8), torch.randn(2, 2, 12, 16)]
    qkv = [t.requires_grad_(True) for t in qkv]

    def loss(q, k, v):
        return flex_mod.attention_flex(q, k, v, spec).square().sum()

    if compiled:
        torch._dynamo.reset()
        loss = torch.compile(loss, fullgraph=True)
    out = loss(*qkv)
    out.backward()
    return [out.detach()] + [t.grad for t in qkv]


@pytest.mark.parametrize("window", [4, None])
def test_flex_under_compile_is_one_opaque_op_with_flex_gradients(monkeypatch, window):
    """Under torch.compile, attention_flex is the ``hymba::flex_attention`` custom op (Inductor cannot fuse into
    flex's kernels): outputs and gradients as in eager, the forward run once and, in backward, once more with
    autograd on to take flex's own gradients. Flex stood in for by the naive attention (CPU has no flex
    backward); the GPU tests of the compiled model run the real one."""
    import hymba.kernels.attention.flex as flex_mod

    grad_modes = []

    def fake_flex(q, k, v, block_mask, enable_gqa, kernel_options):
        T, window, n_meta = block_mask
        grad_modes.append(torch.is_grad_enabled())
        return attention_naive(q, k, v, plain_spec(q.shape[0], T, n_meta, window))

    monkeypatch.setattr(flex_mod, "_compiled", lambda: fake_flex)
    monkeypatch.setattr(flex_mod, "block_mask", lambda T, window, n_meta, device: (T, window, n_meta))
    monkeypatch.setattr(flex_mod, "_capability", lambda device: None)
    spec = plain_spec(2, 12, 2, window)
    want = _flex_loss_and_grads(flex_mod, spec, compiled=False)
    assert grad_modes == [True]  # eager: flex called directly, autograd through it
    grad_modes.clear()
    got = _flex_loss_and_grads(flex_mod, spec, compiled=True)
    assert grad_modes == [False, True]  # the op's forward; its backward's recompute
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
    monkeypatch.setattr(flex_mod, "OPAQUE_UNDER_COMPILE", False)
    grad_modes.clear()
    _flex_loss_and_grads(flex_mod, spec, compiled=True)
    assert grad_modes == [True]  # traced into the graph (called once while tracing)


def test_flex_under_compile_builds_its_first_block_mask_inside_the_graph():
    """The opaque op's body runs with functorch's dispatch keys excluded, and create_block_mask vmaps the
    mask_mod: a length whose block mask is first built there (inside a compiled training step) raised "NYI:
    querying is_contiguous inside of vmap" on an H100. Real flex forward on CPU (CPU flex has no backward), the
    block mask cache empty: the compiled op's output equals the naive attention's, and the mask it built equals
    one built in eager."""
    import hymba.kernels.attention.flex as flex_mod

    spec = plain_spec(1, 40, 3, 8)
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 40, 16) for _ in range(3))
    flex_mod.block_mask.cache_clear()
    torch._dynamo.reset()
    got = torch.compile(lambda q, k, v: flex_mod.attention_flex(q, k, v, spec), fullgraph=True)(q, k, v)
    torch.testing.assert_close(got, attention_naive(q, k, v, spec), rtol=1e-4, atol=1e-4)
    inside = flex_mod.block_mask(40, 8, 3, "cpu")
    flex_mod.block_mask.cache_clear()
    eager = flex_mod.block_mask(40, 8, 3, "cpu")
    assert inside is not eager
    for name in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices", "q_num_blocks"):
        assert torch.equal(getattr(inside, name), getattr(eager, name)), name


def test_flex_under_compile_compiles_its_kernel_inside_the_graph_both_ways(monkeypatch):
    """The opaque op's body calls flex through its own ``torch.compile``: on the first step of a compiled
    training run that inner compile happens inside the outer graph's custom op, forward (no grad) and backward
    (autograd put back), with the real block mask built there too. A compiled stand-in for flex (CPU flex has
    no backward) with the real BlockMask: the compiled loss and gradients equal eager ones."""
    import hymba.kernels.attention.flex as flex_mod

    def stand_in(q, k, v, block_mask, enable_gqa, kernel_options):
        assert block_mask.seq_lengths == (q.shape[2], q.shape[2])
        return attention_naive(q, k, v, spec)

    compiled_stand_in = torch.compile(stand_in, dynamic=False)
    monkeypatch.setattr(flex_mod, "_compiled", lambda: compiled_stand_in)
    monkeypatch.setattr(flex_mod, "_capability", lambda device: None)
    spec = plain_spec(2, 12, 2, 4)
    want = _flex_loss_and_grads(flex_mod, spec, compiled=False)
    flex_mod.block_mask.cache_clear()
    for g, w in zip(_flex_loss_and_grads(flex_mod, spec, compiled=True), want, strict=True):
        torch.testing.assert_close(g, w)


def test_flex_op_keeps_the_query_order_so_the_output_needs_no_copy(monkeypatch):
    """The model's q, k, v are [B, T, H, D] memory seen as [B, H, T, D]. Under compile the opaque op returns
    flex's output in that order (as flex writes it), and the gradients in each input's order, so neither the
    op nor the output projection after it copies; where the kernel wrote another layout the op copies into the
    declared one. Values and gradients as in eager; the stand-in writes [B, H, T, D]-contiguous outputs."""
    import hymba.kernels.attention.flex as flex_mod

    spec = plain_spec(2, 12, 2, 4)
    monkeypatch.setattr(flex_mod, "_compiled", lambda: lambda q, k, v, **kw: attention_naive(q, k, v, spec))
    monkeypatch.setattr(flex_mod, "block_mask", lambda *a: None)
    monkeypatch.setattr(flex_mod, "_capability", lambda device: None)
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 12, h, d).transpose(1, 2) for h, d in ((4, 8), (2, 8), (2, 16)))
    assert flex_mod.dense_strides(q, 16) == (12 * 4 * 16, 16, 4 * 16, 1)  # [B, T, H, Dv] memory
    assert flex_mod.dense_strides(k) == (12 * 2 * 8, 8, 2 * 8, 1)
    out = flex_mod._flex_op(q, k, v, 4, 2)
    assert out.stride() == flex_mod.dense_strides(q, 16)
    torch.testing.assert_close(out, attention_naive(q, k, v, spec))
    x = torch.randn(3, 4)
    assert flex_mod._laid_out(x, x.stride()) is x  # no copy where the layout already is the declared one
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fq, fk, fv = (mode.from_tensor(t) for t in (q, k, v))
        assert flex_mod._flex_op(fq, fk, fv, 4, 2).stride() == out.stride()
        grads = flex_mod._flex_bwd_op(mode.from_tensor(out), fq, fk, fv, 4, 2)
        assert [g.stride() for g in grads] == [flex_mod.dense_strides(t) for t in (q, k, v)]
    qkv = [t.detach().requires_grad_(True) for t in (q, k, v)]
    flex_mod._flex_op(*qkv, 4, 2).square().sum().backward()
    ref = [t.detach().requires_grad_(True) for t in (q, k, v)]
    attention_naive(*ref, spec).square().sum().backward()
    for a, b in zip(qkv, ref):
        assert a.grad.stride() == flex_mod.dense_strides(a)
        torch.testing.assert_close(a.grad, b.grad)

    def loss(attend, bq, bk, bv):  # as the model: [B, T, H, D] in, heads transposed, the output back to [B, T, H*D]
        o = attend(bq.transpose(1, 2), bk.transpose(1, 2), bv.transpose(1, 2))
        return o.transpose(1, 2).reshape(2, 12, -1).square().sum()

    torch._dynamo.reset()
    bases = [t.transpose(1, 2).detach().requires_grad_(True) for t in (q, k, v)]
    compiled = torch.compile(lambda *b: loss(lambda *a: flex_mod.attention_flex(*a, spec), *b), fullgraph=True)
    compiled(*bases).backward()
    want = [t.transpose(1, 2).detach().requires_grad_(True) for t in (q, k, v)]
    loss(lambda *a: attention_naive(*a, spec), *want).backward()
    for a, b in zip(bases, want):
        torch.testing.assert_close(a.grad, b.grad)
