"""FlexAttention path (CUDA): block-sparse causal / sliding-window / meta-prefix masks.

Used for the plain training and prefill layout (no padding, keys == queries), where the mask depends on
indices only and a block mask can be built once per (T, window, n_meta) and reused by every layer.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from hymba.kernels.attention.ref import MaskSpec


def _keys_back(names: tuple[str, ...]):
    """A custom op's body runs with the dispatch keys above its backend excluded: autograd's (no graph is
    recorded, even under enable_grad) and functorch's (vmap fails: "NYI: querying is_contiguous inside of vmap",
    seen on an H100 where the first block mask of a length was built inside a compiled graph). This puts the
    named keys back, the rest of the thread's dispatch state as it is. The guard is PyTorch's own
    (``torch._C``), as its higher-order ops use it."""
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.Undefined)
    for name in names:
        keys = keys | torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, name))
    include, exclude = torch._C._dispatch_tls_local_include_set(), torch._C._dispatch_tls_local_exclude_set()
    return torch._C._ForceDispatchKeyGuard(include, exclude - keys)


AUTOGRAD_KEYS = ("AutogradFunctionality", "AutogradOther", "AutogradNestedTensor")
FUNCTORCH_KEYS = ("FuncTorchBatched", "FuncTorchVmapMode")
FUNCTORCH_KEYS += ("FuncTorchDynamicLayerFrontMode", "FuncTorchDynamicLayerBackMode")


@lru_cache(maxsize=64)
def block_mask(T: int, window: int | None, n_meta: int, device: str):
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, q_idx, kv_idx):
        causal = kv_idx <= q_idx
        if window is None:
            return causal
        return causal & ((q_idx - kv_idx < window) | (kv_idx < n_meta))

    with _keys_back(FUNCTORCH_KEYS):  # it vmaps mask_mod
        return create_block_mask(mask_mod, B=None, H=None, Q_LEN=T, KV_LEN=T, device=device)


# FlexAttention picks its forward tiles by the Q/K head dim alone: on sm90 in bf16, 128 x 128 tiles with 4 warps
# for head dim 64. With a wider V (the released Hymba layout: Q/K 64, V 128) that tile measured 1.6x slower than
# 128 x 64 tiles with 4 warps and 3 stages at a Hymba-1.5B prefill chunk on an H200 (sliding window 3.08 against
# 1.92 ms, causal 9.11 against 5.81; benchmarks/results/2026-12-03-h200-s14.md). With V as wide as Q/K the
# two were equal, so the default stays there. The "fwd_" prefix leaves the backward's own tiles alone.
WIDE_V_FWD_OPTIONS = {"fwd_BLOCK_M": 128, "fwd_BLOCK_N": 64, "fwd_num_warps": 4, "fwd_num_stages": 3}


def fwd_kernel_options(qk_dim: int, v_dim: int, capability: tuple[int, int] | None) -> dict | None:
    """The forward kernel options for these head dims on a GPU of this compute capability (None: flex's own)."""
    if capability == (9, 0) and v_dim > qk_dim:
        return dict(WIDE_V_FWD_OPTIONS)
    return None


@lru_cache(maxsize=8)
def _capability(device: str) -> tuple[int, int] | None:
    return torch.cuda.get_device_capability(device) if device.startswith("cuda") else None


@lru_cache(maxsize=1)
def _compiled():
    from torch.nn.attention.flex_attention import flex_attention

    # Every (shape, window, n_meta) is a recompile; past dynamo's default limit of 8 it silently runs the
    # eager flex_attention, which materialises the full score matrix (seen on an H200: OOM at 8K x batch 8).
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    return torch.compile(flex_attention, dynamic=False)


# Inside a torch.compile'd model (the trainer's compile), Inductor lowers flex_attention into its own templates
# and fuses neighbours into them: on an H100, seed row 13's flex forward took 5.1 ms a step that way against 1.0
# eager and its backward 9.3 against 2.7 (benchmarks/results/2026-12-07-h100-s21.md), with Inductor's prologue
# fusion on or off. So under compile the call goes through the custom ops below, opaque to Inductor: the same
# compiled flex kernels as in eager, with the block mask from the cache (not rebuilt in the graph). Their
# backward recomputes the forward (about a third of the backward's time) to take flex's own gradients. Compiled,
# row 13's flex took 4.7 ms a step this way, forward and backward (H100, session 24,
# benchmarks/results/2026-12-07-h100-s24.md); False keeps flex in the graph (``glue_profile.py --flex-in-graph``).
# The ops return flex's layouts (the query's dimension order; :func:`dense_strides`), not contiguous copies: by count
# 48 of the 60 copies a step (1.4 ms in all) in session 24's profile were most likely the ``.contiguous()`` they
# returned before (not measured since).
OPAQUE_UNDER_COMPILE = True


def _flex(q: Tensor, k: Tensor, v: Tensor, window: int | None, n_meta: int) -> Tensor:
    bm = block_mask(q.shape[2], window, n_meta, str(q.device))
    opts = fwd_kernel_options(q.shape[-1], v.shape[-1], _capability(str(q.device)))
    return _compiled()(q, k, v, block_mask=bm, enable_gqa=k.shape[1] != q.shape[1], kernel_options=opts)


def dense_strides(t: Tensor, last: int | None = None) -> tuple[int, ...]:
    """The strides of a dense tensor of ``t``'s shape (its last dim ``last`` if given) whose dims lie in memory
    in ``t``'s order: how flex lays out its output (after the query's order) and its gradients (after each
    input's). The model's q, k, v are [B, T, H, D] memory seen as [B, H, T, D], so in that order the output
    goes on to the output projection with no copy."""
    shape = (*t.shape[:-1], t.shape[-1] if last is None else last)
    strides, size = [0] * t.dim(), 1
    for i in sorted(range(t.dim()), key=lambda i: (t.stride(i), -i)):  # innermost first
        strides[i] = size
        size *= shape[i]
    return tuple(strides)


def _laid_out(x: Tensor, strides: tuple[int, ...]) -> Tensor:
    """``x`` in the layout the op's fake declares (Inductor plans the graph around it): as it is when flex
    already wrote it so, else copied."""
    if x.stride() == strides:
        return x
    out = x.new_empty_strided(x.shape, strides)
    out.copy_(x)
    return out


@torch.library.custom_op("hymba::flex_attention", mutates_args=())
def _flex_op(q: Tensor, k: Tensor, v: Tensor, window: int | None, n_meta: int) -> Tensor:
    return _laid_out(_flex(q, k, v, window, n_meta), dense_strides(q, v.shape[-1]))


@_flex_op.register_fake
def _(q, k, v, window, n_meta):
    return q.new_empty_strided((*q.shape[:-1], v.shape[-1]), dense_strides(q, v.shape[-1]))


@torch.library.custom_op("hymba::flex_attention_bwd", mutates_args=())
def _flex_bwd_op(
    dout: Tensor, q: Tensor, k: Tensor, v: Tensor, window: int | None, n_meta: int
) -> tuple[Tensor, Tensor, Tensor]:
    with torch.enable_grad(), _keys_back(AUTOGRAD_KEYS):
        qkv = [t.detach().requires_grad_(True) for t in (q, k, v)]
        grads = torch.autograd.grad(_flex(*qkv, window, n_meta), qkv, dout)
    return tuple(_laid_out(g, dense_strides(t)) for g, t in zip(grads, (q, k, v)))


@_flex_bwd_op.register_fake
def _(dout, q, k, v, window, n_meta):
    return tuple(t.new_empty_strided(t.shape, dense_strides(t)) for t in (q, k, v))


def _setup(ctx, inputs, output):
    q, k, v, ctx.window, ctx.n_meta = inputs
    ctx.save_for_backward(q, k, v)


def _backward(ctx, dout):
    q, k, v = ctx.saved_tensors
    return (*_flex_bwd_op(dout, q, k, v, ctx.window, ctx.n_meta), None, None)


_flex_op.register_autograd(_backward, setup_context=_setup)


def attention_flex(q: Tensor, k: Tensor, v: Tensor, spec: MaskSpec) -> Tensor:
    """Args as :func:`hymba.kernels.attention.ref.attention_sdpa`; needs ``spec.n_meta`` (plain layout)."""
    if OPAQUE_UNDER_COMPILE and torch.compiler.is_compiling():
        return _flex_op(q, k, v, spec.window, spec.n_meta or 0)
    return _flex(q, k, v, spec.window, spec.n_meta or 0)
