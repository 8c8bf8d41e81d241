"""transformers 5 classes for the released Hymba format, registered for ``model_type: "hymba"``.

After ``import hymba.hf``, ``AutoConfig.from_pretrained(DIR)`` and ``AutoModelForCausalLM.from_pretrained(DIR)``
load a directory in NVIDIA's released layout (nvidia/Hymba-1.5B-Base, -Instruct, or one written by
``HymbaLM.save_pretrained``) without remote code: :class:`HymbaForCausalLM` wraps our
:class:`~hymba.model.HymbaLM` (``self.model``), read and written by :mod:`hymba.model.pretrained`.

What is supported (anything else is a ``ValueError`` naming the argument, never silently ignored):

- ``from_pretrained(DIR, dtype=..., device_map="cpu" | "cuda" | "cuda:N")`` on a local directory
  (``torch_dtype`` is accepted as the old name of ``dtype``; ``"auto"`` = as stored).
- ``forward(input_ids, attention_mask=None, labels=None)`` -> ``CausalLMOutputWithPast`` with ``logits``
  [B, T, vocab] and, with ``labels``, ``loss``: labels follow transformers' convention (the same tensor as
  ``input_ids``, shifted inside; -100 is ignored). ``attention_mask`` must be left padding.
- ``generate(input_ids, attention_mask=None, max_new_tokens=..., do_sample=False, temperature=..., top_k=...,
  eos_token_id=..., pad_token_id=...)`` runs our decoding cache (:meth:`HymbaLM.generate`), left-padded
  batches included, and returns prompt + new tokens [B, T + max_new_tokens]; after a row's end-of-text token
  it holds ``pad_token_id`` (every row runs to ``max_new_tokens``). No beam search, ``top_p``, repetition
  penalties, streamers or logits processors.
- ``save_pretrained(DIR)`` writes the released layout (:func:`hymba.model.pretrained.save_pretrained`).

Needs the ``hf`` extra (``pip install 'hymba[hf]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

try:
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel
    from transformers.modeling_outputs import CausalLMOutputWithPast
except ImportError as e:
    raise ImportError(f"hymba.hf needs transformers 5, the hf extra: pip install 'hymba[hf]' ({e})") from e

from hymba.config import ModelConfig
from hymba.model import HymbaLM
from hymba.model.pretrained import INERT_FIELDS, MODEL_TYPE, config_from_released

_BASE_FIELDS = frozenset(PretrainedConfig().to_dict())  # what transformers adds to every config


class HymbaConfig(PretrainedConfig):
    """The released ``HymbaConfig`` fields, kept as they are (:meth:`model_config` converts them)."""

    model_type = MODEL_TYPE

    def __init__(self, **kwargs: Any):
        # the official code's own switch ("flex"), not transformers' attention choice: inert here, and
        # save_pretrained writes it again
        kwargs.pop("attn_implementation", None)
        super().__init__(**kwargs)

    def released_fields(self) -> dict[str, Any]:
        """The config.json fields, without the ones transformers adds to every config."""
        d = self.to_dict()
        return {k: v for k, v in d.items() if k not in _BASE_FIELDS or k in INERT_FIELDS or k == "model_type"}

    def model_config(self) -> ModelConfig:
        return config_from_released(self.released_fields(), where="HymbaConfig")


# hub-download arguments that transformers' Auto classes pass on explicitly (5.25 on): at these values they ask
# for nothing, so they are dropped; any other value is an error (a local directory is read as it is)
_HUB_DEFAULTS = {"force_download": False, "subfolder": "", "revision": "main"}


def _reject(where: str, unsupported: dict[str, Any]) -> None:
    given = sorted(k for k, v in unsupported.items() if v is not None)
    if given:
        raise ValueError(f"hymba.hf {where}: unsupported argument(s) {', '.join(given)} (see the hymba.hf docstring)")


class HymbaForCausalLM(PreTrainedModel, GenerationMixin):
    """Our :class:`~hymba.model.HymbaLM` behind transformers' causal-LM interface (module docstring)."""

    config_class = HymbaConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"

    def __init__(self, config: HymbaConfig, model: HymbaLM | None = None):
        super().__init__(config)
        self.model = model if model is not None else HymbaLM(config.model_config())
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        """HymbaLM initialises itself; loaded weights must not be touched."""

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.model.embed

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.model.lm_head

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *model_args: Any,
        config: HymbaConfig | None = None,
        dtype: torch.dtype | str | None = None,
        torch_dtype: torch.dtype | str | None = None,
        device_map: str | torch.device | None = None,
        trust_remote_code: bool | None = None,
        local_files_only: bool | None = None,
        **kwargs: Any,
    ) -> HymbaForCausalLM:
        """A local directory in the released layout (no hub download: use ``huggingface-cli download``)."""
        kwargs.pop("_from_auto", None)
        kwargs.pop("_commit_hash", None)
        kwargs.pop("adapter_kwargs", None)
        for k, default in _HUB_DEFAULTS.items():
            if k in kwargs and kwargs[k] == default:
                del kwargs[k]
        _reject("from_pretrained", dict(kwargs, model_args=model_args or None))
        path = Path(pretrained_model_name_or_path)
        if not path.is_dir():
            raise ValueError(
                f"hymba.hf: {path} is not a local directory; download it first, e.g. "
                f"huggingface-cli download nvidia/Hymba-1.5B-Base --local-dir {path.name}"
            )
        dtype = dtype if dtype is not None else torch_dtype
        if isinstance(device_map, dict):
            raise ValueError("hymba.hf from_pretrained: device_map must be one device (cpu, cuda, cuda:N), not a map")
        lm = HymbaLM.from_pretrained(path, device=device_map, dtype=None if dtype in (None, "auto") else dtype)
        if config is None:
            config = HymbaConfig.from_pretrained(path)
        return cls(config, model=lm).eval()

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> None:
        kwargs.pop("safe_serialization", None)
        _reject("save_pretrained", kwargs)
        extra = {k: getattr(self.config, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
        self.model.save_pretrained(save_directory, extra_config={k: v for k, v in extra.items() if v is not None})

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
        past_key_values: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        _reject(
            "forward",
            dict(
                kwargs,
                past_key_values=past_key_values,
                inputs_embeds=inputs_embeds,
                use_cache=use_cache or None,
                output_attentions=output_attentions or None,
                output_hidden_states=output_hidden_states or None,
                return_dict=None if return_dict in (None, True) else return_dict,
            ),
        )
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        logits = self.model(input_ids, attention_mask=attention_mask).logits
        loss = None
        if labels is not None:
            # transformers' convention: position t predicts labels[t + 1]
            loss = F.cross_entropy(
                logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten().to(logits.device), ignore_index=-100
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int | None = None,
        do_sample: bool | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> torch.LongTensor:
        """Prompt + new tokens [B, T + max_new_tokens] from our decoding cache (module docstring)."""
        gc = self.generation_config
        _reject("generate", kwargs)
        if max_new_tokens is None:
            max_new_tokens = gc.max_new_tokens
        if max_new_tokens is None:
            raise ValueError("hymba.hf generate: give max_new_tokens")
        sample = gc.do_sample if do_sample is None else do_sample
        temp = (gc.temperature if temperature is None else temperature) if sample else 0.0
        k = (gc.top_k if top_k is None else top_k) if sample else None
        eos = eos_token_id if eos_token_id is not None else gc.eos_token_id
        if isinstance(eos, (list, tuple)):
            if len(eos) != 1:
                raise ValueError(f"hymba.hf generate: eos_token_id={eos}: one end-of-text token is supported")
            eos = eos[0]
        pad = pad_token_id if pad_token_id is not None else gc.pad_token_id
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        new = self.model.generate(
            input_ids,
            max_new_tokens,
            temperature=float(temp or 0.0),
            top_k=k or None,
            seed=seed,
            attention_mask=attention_mask,
            eos_id=eos,
        )
        if eos is not None and pad is not None and pad != eos:
            # the tokens after a row's end-of-text token are padding, as transformers writes them
            after = (new == eos).long().cumsum(1) - (new == eos).long() > 0
            new = new.masked_fill(after, pad)
        return torch.cat([input_ids, new.to(input_ids.dtype)], dim=1)


AutoConfig.register(MODEL_TYPE, HymbaConfig, exist_ok=True)
AutoModelForCausalLM.register(HymbaConfig, HymbaForCausalLM, exist_ok=True)

__all__ = ["HymbaConfig", "HymbaForCausalLM"]
