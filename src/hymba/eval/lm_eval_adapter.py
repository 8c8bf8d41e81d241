"""lm-evaluation-harness adapter: a Hymba checkpoint as the harness model ``hymba``.

``lm_eval`` only knows models whose module has been imported, so this module is also an entry point that
registers the model and then runs the harness's own command line::

    python -m hymba.eval.lm_eval_adapter --model hymba --model_args checkpoint=RUN_DIR --tasks piqa,arc_easy
    hymba eval RUN_DIR --tasks piqa,arc_easy          # the same, results saved to RUN_DIR/lm_eval.json

Requests are scored in batches (longest first, left padding, one forward pass per batch); generation
prefills the prompts once and then decodes one token per step from the model's hybrid cache (KV for the
attention heads, SSM and conv states for the Mamba heads), stopping at the task's stop strings.

Needs the ``eval`` extra (``pip install hymba[eval]``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import Collator, handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from tqdm import tqdm

from hymba.model import HymbaLM
from hymba.model.hymba import left_pad, sample_next
from hymba.runtime import resolve_device, resolve_dtype

DEFAULT_MAX_LENGTH = 2048


class TextTokenizer(Protocol):
    """What the adapter needs from a tokenizer."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    @property
    def eos_id(self) -> int: ...


@register_model("hymba")
class HymbaLMEval(TemplateLM):
    """A :class:`~hymba.model.HymbaLM` and its tokenizer behind lm-eval's ``LM`` interface.

    Construct from a run directory (``checkpoint=DIR``, what ``--model_args`` gives) or, in code, from a
    model and tokenizer (``model=..., tokenizer=...``).

    Args:
        checkpoint: run directory written by training (``hymba.train.checkpoint.load_run``).
        model, tokenizer: an in-memory model and tokenizer instead of ``checkpoint``.
        batch_size: requests per forward pass.
        max_length: longest token sequence fed to the model (contexts are left-truncated to it);
            default: the training sequence length stored with the checkpoint, else 2048.
        max_gen_toks: default generation budget when a task does not set one.
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:N"; dtype: float32, bfloat16, float16.
    """

    backend = "causal"

    def __init__(
        self,
        checkpoint: str | None = None,
        *,
        model: HymbaLM | None = None,
        tokenizer: TextTokenizer | None = None,
        batch_size: int | str = 8,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        device: str = "auto",
        dtype: str | torch.dtype = "float32",
        **unused: Any,
    ) -> None:
        super().__init__()
        unknown = sorted(k for k, v in unused.items() if v is not None and k not in ("max_batch_size",))
        if unknown:
            raise ValueError(
                f"unknown model_args for hymba: {', '.join(unknown)}; valid: checkpoint, batch_size, "
                "max_length, max_gen_toks, device, dtype"
            )
        device = resolve_device(device or "auto")
        stored_len = None
        if checkpoint is not None:
            if model is not None or tokenizer is not None:
                raise ValueError("pass either checkpoint=DIR or model= and tokenizer=, not both")
            from hymba.train.checkpoint import load_run

            model, tokenizer, run_cfg = load_run(Path(checkpoint), device=device)
            stored_len = run_cfg.train.seq_len
        if model is None or tokenizer is None:
            raise ValueError("HymbaLMEval needs checkpoint=DIR (or model= and tokenizer= in code)")
        bs = int(batch_size) if str(batch_size) != "auto" else 8
        if bs < 1:
            raise ValueError(f"batch_size={batch_size!r} is invalid: must be a positive integer")
        self._device = device
        self.model = model.to(device=self._device, dtype=resolve_dtype(dtype)).eval()
        self.tokenizer = tokenizer
        self.batch_size = bs
        self.max_length = int(max_length or stored_len or DEFAULT_MAX_LENGTH)
        self.max_gen_toks = int(max_gen_toks)

    # ---- tokenizer surface TemplateLM relies on --------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def tokenizer_name(self) -> str:
        return "hymba"

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return list(self.tokenizer.encode(string))

    def tok_decode(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(list(tokens))

    # ---- scoring -----------------------------------------------------------------------------------
    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[B, T] ids and attention mask (None when no row needs padding)."""
        ids, mask = left_pad(rows, self.eot_token_id)
        ids, mask = ids.to(self._device), mask.to(self._device)
        return ids, (None if bool(mask.all()) else mask)

    @torch.no_grad()
    def _loglikelihood_tokens(
        self, requests: list[tuple[Any, list[int], list[int]]], disable_tqdm: bool = False, **kwargs: Any
    ) -> list[tuple[float, bool]]:
        """Sum of log-probabilities of each continuation given its context, and whether greedy decoding
        would have produced it; the input is left-truncated to ``max_length`` tokens."""

        def key(req):
            toks = req[1] + req[2]
            return -len(toks), tuple(toks)

        res = []
        coll = Collator(requests, sort_fn=key)
        pbar = tqdm(total=len(requests), disable=disable_tqdm, desc="hymba loglikelihood")
        for chunk in coll.get_batched(n=self.batch_size):
            rows, conts = [], []
            for _, ctx, cont in chunk:
                if not cont:
                    raise ValueError("loglikelihood request with an empty continuation")
                if len(cont) > self.max_length:  # as lm-eval's HFLM: the whole continuation must be scored
                    raise ValueError(
                        f"a continuation of {len(cont)} tokens does not fit max_length={self.max_length}"
                        "; raise it (--max-length / max_length=)"
                    )
                rows.append((ctx + cont)[-(self.max_length + 1) :][:-1])
                conts.append(cont)
            ids, mask = self._left_pad(rows)
            logp = F.log_softmax(self.model(ids, attention_mask=mask).logits.float(), dim=-1)
            T = ids.shape[1]
            for (req_str, _, _), cont, lp in zip(chunk, conts, logp):
                n = len(cont)
                lp = lp[T - n :]  # (n, V): the positions that predict the continuation
                target = torch.tensor(cont, device=lp.device)
                greedy = bool((lp.argmax(-1) == target).all())
                ll = float(lp.gather(1, target[:, None]).sum())
                res.append((ll, greedy))
                if req_str is not None:
                    self.cache_hook.add_partial("loglikelihood", req_str, (ll, greedy))
                pbar.update(1)
        pbar.close()
        return coll.get_original(res)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole documents in disjoint windows of at most ``max_length`` tokens, each
        document scored on its own (the harness's perplexity protocol)."""
        windows, owner = [], []
        for i, (string,) in enumerate(req.args for req in requests):
            for ctx, cont in map(
                lm_utils.make_disjoint_window,
                lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            ):
                windows.append((None, ctx, cont))
                owner.append(i)
        scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)
        totals = [0.0] * len(requests)
        for i, (ll, _) in zip(owner, scores):
            totals[i] += ll
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # ---- generation --------------------------------------------------------------------------------
    @torch.no_grad()
    def _generate(
        self,
        rows: list[list[int]],
        max_new: int,
        stop: list[str],
        temperature: float,
        top_k: int | None,
        seed: int | None,
    ) -> list[list[int]]:
        """Prefill once, then one decode step per token from the hybrid cache; a row is finished at EOS or
        when its decoded text contains a stop string."""
        ids, mask = self._left_pad(rows)
        B, T = ids.shape
        logits, cache = self.model.prefill(ids, attention_mask=mask, max_len=T + max_new, last_only=True)
        last = logits[:, -1].float()
        gen = torch.Generator(device=self._device).manual_seed(seed) if seed is not None else None
        out: list[list[int]] = [[] for _ in range(B)]
        done = [False] * B
        for step in range(max_new):
            nxt = sample_next(last, temperature, top_k or None, gen)
            for i, t in enumerate(nxt.tolist()):
                if done[i]:
                    continue
                out[i].append(t)
                if t == self.eot_token_id or (stop and any(s in self.tok_decode(out[i]) for s in stop if s)):
                    done[i] = True
            if all(done) or step + 1 == max_new:
                break
            last = self.model.decode_step(nxt, cache)[:, -1].float()
        return out

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled, when the task asks) continuation of each context until a stop string."""
        res = []
        coll = Collator(
            [req.args for req in requests],
            sort_fn=lambda r: (-len(self.tok_encode(r[0])), r[0]),
            group_by="gen_kwargs",
            group_fn=lambda r: r[1],
        )
        pbar = tqdm(total=len(requests), disable=disable_tqdm, desc="hymba generate_until")
        eos = self.tok_decode([self.eot_token_id])
        for chunk in coll.get_batched(n=self.batch_size):
            contexts, all_kwargs = zip(*chunk)
            kwargs = normalize_gen_kwargs(all_kwargs[0], self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_new = int(kwargs.pop("max_gen_toks"))
            if max_new >= self.max_length:
                raise ValueError(
                    f"max_gen_toks={max_new} leaves no room for the prompt in max_length={self.max_length}"
                )
            temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0
            rows = [self.tok_encode(c)[-(self.max_length - max_new) :] or [self.prefix_token_id] for c in contexts]
            outs = self._generate(rows, max_new, until, temperature, kwargs.get("top_k"), kwargs.get("seed"))
            for context, gen_kwargs, toks in zip(contexts, all_kwargs, outs):
                if toks and toks[-1] == self.eot_token_id:
                    toks = toks[:-1]
                text = postprocess_generated_text(self.tok_decode(toks), stop=until, think_end_token=None)
                res.append(text)
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
                pbar.update(1)
        pbar.close()
        return coll.get_original(res)


def main(argv: list[str] | None = None) -> None:
    """``python -m hymba.eval.lm_eval_adapter <lm_eval arguments>``: the harness CLI with ``hymba`` registered.

    The harness's own default device is ``cuda:0``; here it is ``auto`` unless ``--device`` is given."""
    from lm_eval.__main__ import cli_evaluate

    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--device" or a.startswith("--device=") for a in args):
        args += ["--device", "auto"]
    sys.argv = [sys.argv[0], *args]
    cli_evaluate()


if __name__ == "__main__":
    main()
