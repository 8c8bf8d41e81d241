"""The lm-evaluation-harness adapter against independent references: plain full-sequence forwards of the
same model, and the real harness on a local multiple-choice task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402

from hymba import HymbaLM, ModelConfig  # noqa: E402
from hymba.eval.lm_eval_adapter import HymbaLMEval  # noqa: E402

DATA = Path(__file__).parent / "data"


class ByteTokenizer:
    """Bytes as tokens, EOS = 256: an independent, exactly invertible tokenizer for tests."""

    eos_id = 256
    vocab_size = 257

    def encode(self, text: str) -> list[int]:
        return list(text.encode())

    def decode(self, ids) -> str:
        return bytes(i for i in ids if i < 256).decode(errors="replace")


def tiny_model(**overrides) -> HymbaLM:
    # hybrid heads, SWA + one global layer, meta tokens: every kind of cache state is exercised
    cfg = dict(
        vocab_size=ByteTokenizer.vocab_size,
        d_model=32,
        n_layers=2,
        n_heads=2,
        head_dim=16,
        d_state=4,
        swa_plan=[1],
        window=8,
        n_meta_tokens=3,
        init_std=0.2,
    )  # strong enough that every path counts
    cfg.update(overrides)
    torch.manual_seed(0)
    return HymbaLM(ModelConfig(**cfg)).eval()


@pytest.fixture(scope="module")
def lm() -> HymbaLMEval:
    return HymbaLMEval(model=tiny_model(), tokenizer=ByteTokenizer(), batch_size=3, max_length=64)


def _req(kind: str, args: tuple, i: int = 0) -> Instance:
    return Instance(request_type=kind, doc={}, arguments=args, idx=i)


def _reference_logprob(model: HymbaLM, ctx: list[int], cont: list[int]) -> tuple[float, bool]:
    ids = torch.tensor([ctx + cont])[:, :-1]
    with torch.no_grad():
        lp = F.log_softmax(model(ids).logits[0].float(), -1)[len(ctx) - 1 :]
    target = torch.tensor(cont)
    return float(lp.gather(1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all())


PAIRS = [
    ("The sky is", " blue"),
    ("Fire feels", " hot and bright"),
    ("A", " b"),
    ("", "empty context"),
    ("Snow is usually white, and ice is made of frozen", " water"),
]


def test_loglikelihood_matches_unpadded_forward(lm):
    got = lm.loglikelihood([_req("loglikelihood", p, i) for i, p in enumerate(PAIRS)])
    tok = ByteTokenizer()
    for (ctx, cont), (ll, greedy) in zip(PAIRS, got):
        c = tok.encode(ctx) if ctx else [tok.eos_id]
        ref_ll, ref_greedy = _reference_logprob(lm.model, c, tok.encode(cont))
        assert ll == pytest.approx(ref_ll, abs=1e-4)
        assert greedy == ref_greedy


def test_loglikelihood_truncates_to_max_length():
    model = tiny_model()
    lm = HymbaLMEval(model=model, tokenizer=ByteTokenizer(), batch_size=2, max_length=16)
    ctx, cont = "x" * 40 + " and then", " more"
    ((ll, _),) = lm.loglikelihood([_req("loglikelihood", (ctx, cont))])
    full = ByteTokenizer().encode(ctx + cont)[-17:]
    ref, _ = _reference_logprob(model, full[: -len(cont)], full[-len(cont) :])
    assert ll == pytest.approx(ref, abs=1e-4)


def test_a_continuation_longer_than_max_length_is_a_clear_error():
    short = HymbaLMEval(model=tiny_model(), tokenizer=ByteTokenizer(), batch_size=2, max_length=16)
    with pytest.raises(ValueError, match="continuation of 20 tokens does not fit max_length=16"):
        short.loglikelihood([_req("loglikelihood", ("ctx", "y" * 20))])
    assert len(short.loglikelihood([_req("loglikelihood", ("ctx", "y" * 16))])) == 1  # the longest that fits


def test_loglikelihood_rolling_is_sum_of_token_logprobs(lm):
    text = "Grass is green. The sun rises in the east."  # shorter than max_length: one window
    (total,) = lm.loglikelihood_rolling([_req("loglikelihood_rolling", (text,))])
    toks = ByteTokenizer().encode(text)
    ref, _ = _reference_logprob(lm.model, [ByteTokenizer.eos_id], toks)
    assert total == pytest.approx(ref, abs=1e-3)


def test_loglikelihood_rolling_long_document_scores_every_token_once():
    model = tiny_model()
    small = HymbaLMEval(model=model, tokenizer=ByteTokenizer(), batch_size=4, max_length=16)
    text = "abcdefghij" * 5  # 50 tokens -> several windows of 16
    (total,) = small.loglikelihood_rolling([_req("loglikelihood_rolling", (text,))])
    toks = ByteTokenizer().encode(text)
    # independent reference: token t is predicted from the (at most) 16 tokens before it, windows disjoint
    ref, start, prev = 0.0, 0, [ByteTokenizer.eos_id] + toks
    while start < len(toks):
        n = 16 if start == 0 else min(16, len(toks) - start)
        end = start + n
        inp = prev[max(0, end - 16) : end]
        with torch.no_grad():
            lp = F.log_softmax(model(torch.tensor([inp])).logits[0].float(), -1)[-n:]
        ref += float(lp.gather(1, torch.tensor(toks[start:end])[:, None]).sum())
        start = end
    assert total == pytest.approx(ref, abs=1e-3)


def _greedy_reference(model: HymbaLM, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt) :]


def test_generate_until_matches_full_forward_greedy(lm):
    prompts = ["The sky is", "Fire", "One plus one is two and"]
    reqs = [
        _req("generate_until", (p, {"until": ["\n\n"], "max_gen_toks": 12, "do_sample": False}), i)
        for i, p in enumerate(prompts)
    ]
    got = lm.generate_until(reqs)
    tok = ByteTokenizer()
    for p, text in zip(prompts, got):
        ref = _greedy_reference(lm.model, tok.encode(p), 12)
        if tok.eos_id in ref:
            ref = ref[: ref.index(tok.eos_id)]
        assert text == tok.decode(ref).split("\n\n")[0]


def test_generate_until_stops_at_stop_string(lm):
    prompt = "The sky is"
    free = lm.generate_until([_req("generate_until", (prompt, {"until": [], "max_gen_toks": 10}))])[0]
    assert len(free) >= 3
    stop = free[2]
    cut = lm.generate_until([_req("generate_until", (prompt, {"until": [stop], "max_gen_toks": 10}))])[0]
    assert cut == free.split(stop)[0]


def test_rejects_unknown_model_args():
    with pytest.raises(ValueError, match="pretrained"):
        HymbaLMEval(model=tiny_model(), tokenizer=ByteTokenizer(), pretrained="gpt2")


def test_real_harness_on_local_task(lm, monkeypatch, tmp_path):
    """The harness itself (task YAML with dataset_path: json and local files) drives the adapter."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.chdir(DATA)  # data_files in the YAML are relative to it
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=["hymba_toy_mc", "hymba_toy_cloze"],
        log_samples=False,
        task_manager=TaskManager(include_path=str(DATA)),
    )
    docs = [json.loads(line) for line in (DATA / "toy_mc.jsonl").read_text().splitlines()]
    # independent reference for the cloze task: argmax of the summed continuation log-likelihood
    tok = ByteTokenizer()
    correct = 0
    for d in docs:
        # the harness scores target_delimiter (default " ") + choice after the question
        scores = [_reference_logprob(lm.model, tok.encode(d["question"]), tok.encode(" " + c))[0] for c in d["choices"]]
        correct += int(max(range(len(scores)), key=scores.__getitem__) == d["label"])
    assert out["results"]["hymba_toy_cloze"]["acc,none"] == pytest.approx(correct / len(docs))
    assert 0.0 <= out["results"]["hymba_toy_mc"]["acc,none"] <= 1.0


# ---- `hymba eval` on a trained checkpoint ------------------------------------------------------------


def _train_toy_checkpoint(run_dir: Path) -> None:
    """A real training run (``hymba.train.train``) of a tiny hybrid model on the toy task's correct answers."""
    from hymba.config import DataConfig, RunConfig, TrainConfig
    from hymba.train import train

    docs = [json.loads(line) for line in (DATA / "toy_mc.jsonl").read_text().splitlines()]
    corpus = run_dir.parent / "toy.txt"
    corpus.write_text("\n".join(d["question"] + d["choices"][d["label"]] + "." for d in docs) * 40 + "\n")
    cfg = RunConfig(
        model=tiny_model().config.replace(n_meta_tokens=0),
        data=DataConfig(source=str(corpus), vocab_size=320, cache_dir=str(run_dir.parent / "cache")),
        train=TrainConfig(
            device="cpu",
            seq_len=32,
            batch_size=16,
            max_steps=60,
            lr=1e-2,
            warmup_steps=5,
            progress=False,
            log_every=100,
        ),
    )
    train(cfg, run_dir)


def test_hymba_eval_cli_writes_results(tmp_path, monkeypatch, capsys):
    from hymba.cli import main

    run_dir = tmp_path / "run"
    _train_toy_checkpoint(run_dir)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.chdir(DATA)
    rc = main(
        [
            "eval",
            str(run_dir),
            "--tasks",
            "hymba_toy_mc,hymba_toy_cloze",
            "--include-path",
            str(DATA),
            "--batch-size",
            "4",
        ]
    )
    assert rc == 0
    res = json.loads((run_dir / "lm_eval.json").read_text())
    assert set(res["tasks"]) == {"hymba_toy_mc", "hymba_toy_cloze"}
    assert {"acc", "acc_norm", "acc_stderr", "n"} <= set(res["tasks"]["hymba_toy_mc"])
    assert res["tasks"]["hymba_toy_mc"]["n"] == 12
    accs = [r["acc"] for r in res["tasks"].values()]
    assert res["mean_acc"] == pytest.approx(sum(accs) / 2)
    # the model was fitted to the correct answers: far above the 1/3 of guessing on the cloze prompt
    assert res["tasks"]["hymba_toy_cloze"]["acc"] >= 0.75
    assert "mean" in capsys.readouterr().out
    # the harness's own command line, with the model registered by the adapter's entry point
    from hymba.eval.lm_eval_adapter import main as harness_main

    harness_main(
        [
            "--model",
            "hymba",
            "--model_args",
            f"checkpoint={run_dir}",
            "--tasks",
            "hymba_toy_cloze",
            "--include_path",
            str(DATA),
            "--device",
            "cpu",
        ]
    )
    assert "hymba_toy_cloze" in capsys.readouterr().out


def test_hymba_eval_cli_errors_are_one_line(tmp_path, capsys):
    from hymba.cli import main

    assert main(["eval", str(tmp_path / "nope"), "--tasks", "piqa"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hymba eval: error:") and "\n" not in err


def test_mean_accuracy_counts_subtasks_not_their_group_aggregate():
    from hymba.eval.harness import request_record, summarize

    results = {
        "results": {
            "grp": {"acc,none": 0.9},
            "a": {"acc,none": 0.2},
            "b": {"acc,none": 0.4},
            "c": {"acc,none": 0.6, "acc_norm,none": 0.5},
        },
        "group_subtasks": {"grp": ["a", "b"], "c": []},
    }
    s = summarize(results, checkpoint="x", request=request_record(["grp", "c"], max_length=64), seconds=1.0)
    assert set(s["tasks"]) == {"a", "b", "c"} and s["mean_acc"] == pytest.approx(0.4) and s["max_length"] == 64
