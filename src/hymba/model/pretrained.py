"""NVIDIA's released checkpoint format (nvidia/Hymba-1.5B-Base, -Instruct): read, convert, write.

A released directory holds ``config.json`` (the fields of the official ``HymbaConfig``: ``hidden_size``,
``num_memory_tokens``, ``kv_reuse_group``, ``sliding_window``, ``rope_type``, ...) and the weights under the
official tensor names (``model.layers.{i}.mamba.in_proj.weight``, ``model.memory_tokens``, ...) in
``model.safetensors`` or in shards listed by ``model.safetensors.index.json``; usually ``tokenizer.json`` too.
Our model has the released architecture and the same tensors one to one (same shapes); two conventions
differ and are converted here (read from the official modeling code, checked with identical weights):

- Sliding window: the official full forward lets a query see keys with ``q - k <= sliding_window``, i.e.
  ``W + 1`` tokens; our ``window=W`` sees ``W``. A released ``sliding_window: W`` is our ``window = W + 1``
  (the official cached decode trims to ``W`` and disagrees with its own full forward; ours follows the full
  forward, the way the model was trained).
- RoPE: ``rope_type: "ntk"`` turns ``rope_theta`` into the base
  ``rope_theta * (2 * max_position_embeddings / orig_max_position_embeddings - 1) ** (d / (d - 2))``
  (:func:`ntk_rope_base`; 74534.8 for the released 8192 / 2048 and head dim 64), our ``rope_base``.

A field whose value the model cannot honour (MoE experts, another activation, a K/Q norm, ...) is an error
naming the field and value; fields that change nothing (runtime switches, bookkeeping) are accepted
(:data:`INERT_FIELDS`); keys this module does not know are listed once in a warning. Writing
(:func:`save_pretrained`) gives the same layout with the fields the official code reads, ``{"format": "pt"}``
safetensors metadata (its loader needs it) and no ``lm_head.weight`` when the embeddings are tied.
File names: :class:`hymba.rundir.RunDir` (a released directory shares them with a training run directory;
:func:`is_pretrained_dir` tells the two apart by ``config.json``'s ``model_type``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from hymba.config import ModelConfig
from hymba.io import atomic_path, atomic_write
from hymba.model.hymba import HymbaLM
from hymba.model.layers import Rotary
from hymba.rundir import RunDir

log = logging.getLogger(__name__)

MODEL_TYPE = "hymba"
ARCHITECTURE = "HymbaForCausalLM"
# what the released config.json points transformers' remote-code loader at (files that ship with the release)
AUTO_MAP = {"AutoConfig": "configuration_hymba.HymbaConfig", "AutoModelForCausalLM": "modeling_hymba.HymbaForCausalLM"}
NTK_FACTOR = 2  # the official rotary's fixed NTK factor
DEFAULT_MAX_POSITIONS = 8192  # max_position_embeddings written when the caller gives none (the released value)
SHARD_NAME = "model-{:05d}-of-{:05d}.safetensors"  # the shard names transformers writes
SAFETENSORS_METADATA = {"format": "pt"}

# config.json fields that change nothing in the computation: runtime switches of the official code, training
# bookkeeping, token ids (the tokenizer's business), what transformers itself writes
INERT_FIELDS = frozenset(
    {
        "architectures",
        "auto_map",
        "attn_implementation",
        "attn_implementation_new",
        "_attn_implementation",
        "calc_logits_for_entire_prompt",
        "use_cache",
        "use_mamba_kernels",
        "output_router_logits",
        "router_aux_loss_coef",
        "num_experts_per_tok",
        "seq_length",
        "max_position_embeddings",
        "orig_max_position_embeddings",
        "torch_dtype",
        "dtype",
        "transformers_version",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "_name_or_path",
        "model_type",
    }
)

# ---- tensor names -----------------------------------------------------------------------------------------
_TOP = {
    "embed.weight": "model.embed_tokens.weight",
    "meta_tokens": "model.memory_tokens",
    "norm.weight": "model.final_layernorm.weight",
    "lm_head.weight": "lm_head.weight",
}
_LAYER = {
    "mixer_norm.weight": "input_layernorm.weight",
    "in_proj.weight": "mamba.in_proj.weight",
    "out_proj.weight": "mamba.out_proj.weight",
    "attn_norm.weight": "mamba.pre_avg_layernorm1.weight",  # beta1 of Eq. 3
    "ssm_norm.weight": "mamba.pre_avg_layernorm2.weight",  # beta2 of Eq. 3
    "ssm.conv1d.weight": "mamba.conv1d.weight",
    "ssm.conv1d.bias": "mamba.conv1d.bias",
    "ssm.x_proj.weight": "mamba.x_proj.0.weight",
    "ssm.dt_proj.weight": "mamba.dt_proj.0.weight",
    "ssm.dt_bias": "mamba.dt_proj.0.bias",
    "ssm.A_log": "mamba.A_log.0",
    "ssm.D": "mamba.D.0",
    "ssm.dt_norm.weight": "mamba.dt_layernorm.weight",
    "ssm.B_norm.weight": "mamba.B_layernorm.weight",
    "ssm.C_norm.weight": "mamba.C_layernorm.weight",
    "ffn_norm.weight": "pre_moe_layernorm.weight",
    "ffn.w_down.weight": "moe.experts.0.down_proj.weight",
}
# ours stacks what the released format keeps apart: our tensor -> its official parts, in row order
_STACKED = {"ffn.w_gate_up.weight": ("moe.experts.0.gate_proj.weight", "moe.experts.0.up_proj.weight")}
_LAYER_BACK = {v: k for k, v in _LAYER.items()}
_PART_BACK = {o: (k, i) for k, parts in _STACKED.items() for i, o in enumerate(parts)}
_TOP_BACK = {v: k for k, v in _TOP.items()}
_OURS_LAYER = re.compile(r"layers\.(\d+)\.(.+)")
_OFFICIAL_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")


def official_names(name: str) -> tuple[str, ...]:
    """Our state-dict name -> the official tensor name(s) (``layers.3.ssm.dt_bias`` -> ``model.layers.3.mamba.
    dt_proj.0.bias``; our stacked FFN gate/up weight -> the official gate and up weights). A name with no
    official counterpart is a ``KeyError``."""
    if name in _TOP:
        return (_TOP[name],)
    m = _OURS_LAYER.fullmatch(name)
    if m and m.group(2) in _LAYER:
        return (f"model.layers.{m.group(1)}.{_LAYER[m.group(2)]}",)
    if m and m.group(2) in _STACKED:
        return tuple(f"model.layers.{m.group(1)}.{o}" for o in _STACKED[m.group(2)])
    raise KeyError(f"{name} has no name in the released format")


def our_name(name: str) -> tuple[str, int | None] | None:
    """The official tensor name -> (our state-dict name, the part it is of our stacked tensor or None); None
    for a name the released format does not have."""
    if name in _TOP_BACK:
        return _TOP_BACK[name], None
    m = _OFFICIAL_LAYER.fullmatch(name)
    if m and m.group(2) in _LAYER_BACK:
        return f"layers.{m.group(1)}.{_LAYER_BACK[m.group(2)]}", None
    if m and m.group(2) in _PART_BACK:
        ours, part = _PART_BACK[m.group(2)]
        return f"layers.{m.group(1)}.{ours}", part
    return None


def to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict -> the released format's tensors (a stacked tensor split into its official parts)."""
    out = {}
    for k, v in state.items():
        names = official_names(k)
        for n, t in zip(names, v.chunk(len(names))):
            out[n] = t
    return out


# ---- config.json <-> ModelConfig --------------------------------------------------------------------------
def ntk_rope_base(rope_theta: float, head_dim: int, max_positions: int, orig_max_positions: int) -> float:
    """The RoPE base of the official ``rope_type: "ntk"``: ``theta * (2 * max / orig - 1) ** (d / (d - 2))``."""
    scale = NTK_FACTOR * max_positions / orig_max_positions - (NTK_FACTOR - 1)
    return rope_theta * scale ** (head_dim / (head_dim - 2))


def window_from_released(sliding_window: int) -> int:
    """A released ``sliding_window`` (a query sees ``q - k <= W``: W + 1 keys) as our ``window``."""
    return sliding_window + 1


def window_to_released(window: int) -> int:
    return window - 1


def _unsupported(field: str, value: Any, why: str, where: str) -> ValueError:
    return ValueError(f"{where}: {field}={json.dumps(value)} is not supported: {why}")


def config_from_released(raw: dict[str, Any], where: str = "config.json") -> ModelConfig:
    """The :class:`ModelConfig` of a released ``config.json`` (a dict). A field the model cannot honour is a
    ``ValueError`` naming it and its value; unknown keys are listed once in a warning."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a JSON object of HymbaConfig fields")
    if raw.get("model_type") != MODEL_TYPE:
        raise ValueError(f"{where}: model_type={json.dumps(raw.get('model_type'))} is not {MODEL_TYPE!r}")
    used: set[str] = set()

    def get(field: str, default: Any = ...) -> Any:
        used.add(field)
        if field in raw and raw[field] is not None:
            return raw[field]
        if default is ...:
            raise ValueError(f"{where}: field {field} is missing")
        return default

    def require(field: str, ok: Any, default: Any, why: str) -> Any:
        v = get(field, default)
        try:
            good = ok(v) if callable(ok) else v in ok
        except (TypeError, ValueError, AttributeError):  # a value of the wrong kind (a list for a dict, ...)
            good = False
        if not good:
            raise _unsupported(field, v, why, where)
        return v

    d, L = get("hidden_size"), get("num_hidden_layers")
    H = get("num_attention_heads")
    expand = get("mamba_expand", 2)
    if not all(isinstance(v, int) and v > 0 for v in (d, L, H)) or d % H:
        raise _unsupported("num_attention_heads", H, f"must divide hidden_size={d}", where)
    d_inner = int(expand * d)
    # the official block sizes Q/K from hidden_size / heads and V from its inner width / heads, whatever these say
    require("attn_hidden_size", (-1, d), -1, "the attention width must be hidden_size (-1)")
    require("kq_head_dim", (-1, d // H), -1, f"the Q/K head dim must be hidden_size / heads = {d // H} (-1)")
    require("v_head_dim", (-1, d_inner // H), -1, f"the V head dim must be inner width / heads = {d_inner // H} (-1)")
    require("hidden_act", ("silu",), "silu", "the SSM gate is SiLU")
    require("mlp_hidden_act", ("silu",), "silu", "the FFN is SwiGLU (silu)")
    require("kq_norm", ("none",), "none", "no norm on Q and K")
    require("num_experts", (1,), ..., "one FFN per layer (no mixture of experts)")
    require("num_mamba", (1,), 1, "one SSM per layer")
    require("kv_weight_reuse", (False,), False, "layers that reuse K/V reuse the producer's K/V, not its weights")
    require("kv_reuse_every_i_layer", lambda v: v <= 0, -1, "KV sharing is given by kv_reuse_group")
    require("memory_tokens_interspersed_every", (0,), 0, "meta tokens are prepended once")
    require("mamba_proj_bias", (False,), False, "the projections have no bias")
    require("mamba_conv_bias", (True,), True, "the SSM conv has a bias")
    require("mamba_inner_layernorms", (True,), True, "RMSNorm on dt, B and C as released")
    require("attention_dropout", (0, 0.0), 0.0, "no attention dropout")
    require("intermediate_size", lambda v: isinstance(v, int) and v > 0, ..., "every layer has an FFN")
    require("layer_type", lambda v: all(t == "h" for t in v), ["h"] * L, "every layer is hybrid ('h')")
    require("conv_dim", lambda v: all(int(w) == d_inner for w in dict(v).values()), {}, f"conv width {d_inner}")
    rope = bool(get("rope", False))
    theta = float(get("rope_theta", 10000.0))
    rope_type = require("rope_type", ("default", "ntk", None), None, "rope_type must be default or ntk")
    base = theta
    if rope and rope_type == "ntk":
        base = ntk_rope_base(theta, d // H, get("max_position_embeddings"), get("orig_max_position_embeddings"))
    sliding = get("sliding_window", None)
    groups = get("kv_reuse_group", None)
    fields = dict(
        vocab_size=get("vocab_size"),
        d_model=d,
        n_layers=L,
        n_heads=H,
        n_kv_heads=get("num_key_value_heads", H),
        rope=rope,
        rope_base=base,
        ssm=True,
        d_state=get("mamba_d_state", 16),
        d_conv=get("mamba_d_conv", 4),
        expand=expand,
        dt_rank=None if get("mamba_dt_rank", "auto") == "auto" else raw["mamba_dt_rank"],
        fusion="mean",
        swa_plan="none" if sliding is None else sorted(get("global_attn_idx", [])),
        kv_share=bool(groups),
        kv_share_groups=[list(g) for g in groups] if groups else None,
        n_meta_tokens=get("num_memory_tokens", 0),
        d_ff=raw["intermediate_size"],
        norm_eps=float(get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(get("tie_word_embeddings")),
        init_std=float(get("initializer_range", 0.02)),
    )
    if sliding is not None:
        fields["window"] = window_from_released(sliding)
    unknown = sorted(set(raw) - used - INERT_FIELDS)
    if unknown:
        log.warning("%s: ignoring field(s) hymba does not know: %s", where, ", ".join(unknown))
    try:
        return ModelConfig(**fields)
    except ValueError as e:
        raise ValueError(f"{where}: not supported by this model: {e}") from None


def config_to_released(c: ModelConfig, extra: dict[str, Any] | None = None, dtype: torch.dtype | None = None) -> dict:
    """The released ``config.json`` fields of ``c`` (what the official code and :func:`config_from_released`
    read); ``extra`` adds inert fields (token ids, ``max_position_embeddings``). A config the released format
    cannot express (no SSM or no attention, concat fusion, a Q/K head dim other than d_model / heads) is a
    ``ValueError`` naming the field."""
    where = "save_pretrained"
    if not c.ssm or c.n_heads == 0:
        raise ValueError(f"{where}: model.ssm={c.ssm}, model.n_heads={c.n_heads}: released layers are hybrid")
    if c.fusion != "mean":
        raise ValueError(f"{where}: model.fusion={c.fusion!r}: the released block averages the branches (mean)")
    if c.d_model % c.n_heads or c.qk_head_dim != c.d_model // c.n_heads:
        raise ValueError(f"{where}: model.head_dim={c.head_dim}: the released Q/K head dim is d_model / n_heads")
    if c.v_head_dim is not None:
        raise ValueError(
            f"{where}: model.v_head_dim={c.v_head_dim}: the released layout derives the V head dim (leave it unset)"
        )
    swa = bool(c.swa_layers())
    out: dict[str, Any] = {
        "architectures": [ARCHITECTURE],
        "auto_map": dict(AUTO_MAP),
        "model_type": MODEL_TYPE,
        "vocab_size": c.vocab_size,
        "hidden_size": c.d_model,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.kv_heads,
        "intermediate_size": c.ffn_dim,
        "attn_hidden_size": -1,
        "kq_head_dim": -1,
        "v_head_dim": c.value_head_dim,
        "kq_norm": "none",
        "hidden_act": "silu",
        "mlp_hidden_act": "silu",
        "rms_norm_eps": c.norm_eps,
        "tie_word_embeddings": c.tie_embeddings,
        "initializer_range": c.init_std,
        "rope": c.rope,
        "rope_theta": c.rope_base,
        "rope_type": "default",
        "max_position_embeddings": DEFAULT_MAX_POSITIONS,
        "sliding_window": window_to_released(c.window) if swa else None,
        "global_attn_idx": c.global_layers() if swa else None,
        "kv_reuse_group": c.kv_groups() or None,
        "kv_reuse_every_i_layer": -1,
        "kv_weight_reuse": False,
        "num_memory_tokens": c.n_meta_tokens,
        "memory_tokens_interspersed_every": 0,
        "mamba_d_state": c.d_state,
        "mamba_d_conv": c.d_conv,
        "mamba_expand": c.expand,
        "mamba_dt_rank": c.ssm_dt_rank,
        "mamba_conv_bias": True,
        "mamba_proj_bias": False,
        "mamba_inner_layernorms": True,
        "num_experts": 1,
        "num_experts_per_tok": 1,
        "num_mamba": 1,
        "layer_type": ["h"] * c.n_layers,
        "attention_dropout": 0.0,
        # the official model needs flex attention with meta tokens
        "attn_implementation": "flex",
        "attn_implementation_new": "flex",
        "use_cache": False,
        "use_mamba_kernels": True,
        "calc_logits_for_entire_prompt": False,
    }
    if dtype is not None:
        out["torch_dtype"] = str(dtype).removeprefix("torch.")
    for k, v in (extra or {}).items():
        if k not in INERT_FIELDS:
            raise ValueError(f"{where}: extra field {k} would change the model; only {', '.join(sorted(INERT_FIELDS))}")
        out[k] = v
    return dict(sorted(out.items()))


# ---- directories ------------------------------------------------------------------------------------------
def read_config(path: str | Path) -> dict[str, Any]:
    """``config.json`` of a released-layout directory, as a dict (not yet converted)."""
    file = RunDir(path).config_json
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint directory: {RunDir.CONFIG_JSON} is missing")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{file} is corrupt (not valid JSON: {e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{file} is corrupt (not a JSON object)")
    return raw


def is_pretrained_dir(path: str | Path) -> bool:
    """``path`` holds a released-layout checkpoint: a ``config.json`` with a ``model_type`` (a training run's
    ``config.json`` holds ``model``/``data``/``train`` tables instead)."""
    try:
        return "model_type" in read_config(path)
    except (FileNotFoundError, ValueError):
        return False


def _weight_files(path: Path) -> tuple[list[Path], dict[str, str] | None]:
    """The safetensors files of a directory and, when sharded, the index's name -> file map."""
    rd = RunDir(path)
    index = path / RunDir.WEIGHTS_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{index} is corrupt ({type(e).__name__}: {e})") from None
        files = [path / f for f in sorted(set(weight_map.values()))]
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"{index} lists {f.name}, which is missing")
        return files, weight_map
    if rd.weights.is_file():
        return [rd.weights], None
    raise FileNotFoundError(f"{path} has no weights: neither {RunDir.WEIGHTS} nor {RunDir.WEIGHTS_INDEX}")


def _read_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import SafetensorError, safe_open

    files, weight_map = _weight_files(path)
    for f in files:
        try:
            with safe_open(str(f), framework="pt", device="cpu") as st:
                for name in st.keys():  # noqa: SIM118 (safe_open has no __iter__)
                    if weight_map is not None and weight_map.get(name) != f.name:
                        raise ValueError(f"{f}: tensor {name} is not listed for this file in {RunDir.WEIGHTS_INDEX}")
                    yield name, st.get_tensor(name)
        except (SafetensorError, OSError) as e:
            raise ValueError(f"cannot read weights {f}: {e}") from None


def load_pretrained(
    path: str | Path, device: str | torch.device | None = None, dtype: torch.dtype | str | None = None
) -> HymbaLM:
    """A :class:`HymbaLM` from a released-layout directory, in eval mode, on ``device`` (default CPU) in
    ``dtype`` (default: the stored dtype). Every problem with the weights (a missing tensor, an unexpected
    one, a wrong shape) is reported in one ``ValueError``."""
    from hymba.runtime import resolve_device, resolve_dtype

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {path} does not exist")
    config = config_from_released(read_config(path), where=str(RunDir(path).config_json))
    dev = torch.device("cpu") if device is None else resolve_device(device)
    with torch.device("meta"):
        model = HymbaLM(config)  # shapes only: every tensor comes from the checkpoint
    expected = {k: v for k, v in model.state_dict().items() if not (config.tie_embeddings and k == "lm_head.weight")}
    state: dict[str, torch.Tensor] = {}
    parts: dict[str, dict[int, torch.Tensor]] = {}
    problems: list[str] = []
    tied_head = None
    for name, t in _read_tensors(path):
        ours, part = our_name(name) or (None, None)
        if ours == "lm_head.weight" and config.tie_embeddings:
            tied_head = t  # some writers store the tied head anyway: it must equal the embedding
        elif ours is None or ours not in expected:
            problems.append(f"unexpected tensor {name}")
        else:
            want = list(expected[ours].shape)
            if part is not None:  # one of the official parts our tensor stacks along its rows
                want[0] //= len(official_names(ours))
            if list(t.shape) != want:
                problems.append(f"{name} has shape {list(t.shape)} but config.json gives {want}")
            elif part is None:
                state[ours] = t
            else:
                parts.setdefault(ours, {})[part] = t
    for ours, got in parts.items():
        if len(got) == len(official_names(ours)):
            state[ours] = torch.cat([got[i] for i in range(len(got))])
    problems += [
        f"missing tensor {n}"
        for k in expected
        if k not in state
        for i, n in enumerate(official_names(k))
        if i not in parts.get(k, {})
    ]
    if tied_head is not None and "embed.weight" in state and not torch.equal(tied_head, state["embed.weight"]):
        problems.append("lm_head.weight differs from model.embed_tokens.weight but tie_word_embeddings is true")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ValueError(f"weights in {path} do not fit its config.json: {'; '.join(problems[:5])}{more}")
    if dtype is None:
        dtype = next(t.dtype for t in state.values() if t.is_floating_point())
    dtype = resolve_dtype(dtype)
    state = {k: v.to(device=dev, dtype=dtype) for k, v in state.items()}
    if config.tie_embeddings:
        state["lm_head.weight"] = state["embed.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_embeddings:
        model.lm_head.weight = model.embed.weight  # assign= gave the head its own Parameter object
    if model.rotary is not None:
        model.rotary = Rotary(config.qk_head_dim, config.rope_base).to(dev)  # non-persistent: not in the file
    left = [n for n, b in model.named_buffers() if b.is_meta]
    assert not left, f"buffers not restored after loading: {left}"
    return model.eval()


def save_pretrained(
    model: HymbaLM,
    path: str | Path,
    extra_config: dict[str, Any] | None = None,
    max_shard_bytes: int | None = None,
) -> None:
    """Write ``model`` in the released layout: ``config.json`` (:func:`config_to_released`, with
    ``extra_config``'s inert fields) and the weights under the official names, in one ``model.safetensors`` or,
    past ``max_shard_bytes``, in shards with ``model.safetensors.index.json``. Files are written atomically,
    the weights before the config; weights of an earlier save in the other layout are removed."""
    from safetensors.torch import save_file

    path = Path(path)
    c = model.config
    dtype = next(t.dtype for t in model.state_dict().values() if t.is_floating_point())
    config = config_to_released(c, extra_config, dtype)  # first: a config the format cannot hold writes nothing
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if c.tie_embeddings:
        del state["lm_head.weight"]
    weights = {k: v.contiguous() for k, v in to_official(state).items()}
    path.mkdir(parents=True, exist_ok=True)
    total = sum(t.numel() * t.element_size() for t in weights.values())
    rd = RunDir(path)
    index = path / RunDir.WEIGHTS_INDEX
    old_shards = [path / f for f in _listed_shards(index)]
    if max_shard_bytes is None or total <= max_shard_bytes:
        with atomic_path(rd.weights) as tmp:
            save_file(weights, tmp, metadata=SAFETENSORS_METADATA)
        index.unlink(missing_ok=True)
        for f in old_shards:
            f.unlink(missing_ok=True)
    else:
        shards: list[dict[str, torch.Tensor]] = [{}]
        size = 0
        for name, t in weights.items():
            nbytes = t.numel() * t.element_size()
            if shards[-1] and size + nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][name] = t
            size += nbytes
        names = [SHARD_NAME.format(i + 1, len(shards)) for i in range(len(shards))]
        for name, shard in zip(names, shards):
            with atomic_path(path / name) as tmp:
                save_file(shard, tmp, metadata=SAFETENSORS_METADATA)
        weight_map = {t: name for name, shard in zip(names, shards) for t in shard}
        atomic_write(index, json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
        rd.weights.unlink(missing_ok=True)
        for f in old_shards:
            if f.name not in names:
                f.unlink(missing_ok=True)
    atomic_write(rd.config_json, json.dumps(config, indent=2) + "\n")


def _listed_shards(index: Path) -> list[str]:
    try:
        return sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


__all__ = [
    "DEFAULT_MAX_POSITIONS",
    "INERT_FIELDS",
    "config_from_released",
    "config_to_released",
    "is_pretrained_dir",
    "load_pretrained",
    "ntk_rope_base",
    "official_names",
    "our_name",
    "to_official",
    "read_config",
    "save_pretrained",
    "window_from_released",
    "window_to_released",
]
