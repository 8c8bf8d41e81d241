"""MQAR as a recall probe: attention that can reach the keys learns the lookup; attention that cannot
stays at chance. Both go through the same train/evaluate path the ablation's Recall column uses."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hymba import ModelConfig
from hymba.eval.mqar import IGNORE_INDEX, MQARSettings, mqar_batch, recall_accuracy, run_recall, train_mqar
from hymba.train.step import TrainingDiverged

# attention only, full causal attention: a two-layer induction circuit (previous-token head, then lookup)
ATTN = ModelConfig(vocab_size=64, d_model=64, n_layers=2, n_heads=4, ssm=False)
# the same with 2-token sliding windows everywhere: it sees at most 3 tokens back, the keys lie further
BLIND = ATTN.replace(swa_plan="all", window=2)

# The lookup appears as a phase transition (accuracy jumps from 1/N to ~1); at this size it came between
# steps 300 and 500 for three of three seeds with batch 128 and lr 1e-3, and not within 600 steps with
# lr 2e-3 / 3e-3 or with batch 32 / 64, so those are the settings.
LEARN = MQARSettings(
    vocab=64,
    train=[(64, 4)],
    eval=[(64, 4)],
    train_steps=600,
    batch_size=128,
    lrs=[1e-3],
    lr_schedule="constant",
    weight_decay=0.0,
    warmup_steps=20,
    eval_sequences=256,
)


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(min(2, n))
    yield
    torch.set_num_threads(n)


def test_attention_learns_mqar_and_stops_once_it_has():
    # the budget (600 steps) with an early stop at 0.95 on the check stream, checked every 50 steps
    r = run_recall(ATTN, dataclasses.replace(LEARN, target=0.95, eval_every=50), seed=0)
    assert r.accuracy > 0.9, r.to_dict()
    assert r.to_dict()["steps"] < LEARN.train_steps and r.to_dict()["steps"] % 50 == 0, r.to_dict()
    # the curve: one point per check, the last one at the target, the loss falling
    curve = r.to_dict()["curve"]
    assert [p["step"] for p in curve] == list(range(50, r.to_dict()["steps"] + 1, 50)) and r.stopped_early
    assert curve[-1]["accuracy"] >= 0.95 > max(p["accuracy"] for p in curve[:-1])
    assert curve[-1]["loss"] < curve[0]["loss"]


def test_early_stop_settings_are_validated():
    for bad in (0, 1.5, True, "x"):
        with pytest.raises(ValueError, match="recall.target"):
            MQARSettings(target=bad)
    with pytest.raises(ValueError, match="recall.eval_every"):
        MQARSettings(eval_every=0)


def test_attention_that_cannot_see_the_keys_stays_at_chance():
    s = MQARSettings(
        vocab=64,
        train=[(64, 8)],
        eval=[(64, 8)],
        train_steps=60,
        batch_size=32,
        lrs=[3e-3],
        warmup_steps=10,
        eval_sequences=256,
    )
    r = run_recall(BLIND, s, seed=0)
    # chance is 1/32 (a guess among the values); a query right after the context can still be answered,
    # so score the queries whose key lies beyond the 3-token receptive field separately
    assert r.accuracy < 0.2, r.to_dict()
    model_free = _far_query_fraction(s)
    assert model_free > 0.9  # the instance really is mostly out of reach


def _far_query_fraction(s: MQARSettings) -> float:
    seq_len, pairs = s.eval[0]
    ids, labels = mqar_batch(256, vocab=s.vocab, seq_len=seq_len, pairs=pairs, seed=5)
    b, t = (labels != IGNORE_INDEX).nonzero(as_tuple=True)
    key_pos = (ids[b, : 2 * pairs : 2] == ids[b, t][:, None]).float().argmax(1) * 2
    return float(((t - key_pos) > 3).float().mean())


def test_the_loss_at_the_query_positions_is_the_full_loss_with_the_same_gradients():
    """QueryLoss runs the LM head at the labelled positions only: the same loss, logits and gradients as the
    full forward with -100 elsewhere (a hybrid probe with meta tokens, whose positions shift by M inside)."""
    from hymba import HymbaLM
    from hymba.eval.mqar import QueryLoss, query_targets

    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, d_state=4, n_meta_tokens=3, init_std=0.2)
    torch.manual_seed(0)
    a, b = HymbaLM(cfg), HymbaLM(cfg)
    b.load_state_dict(a.state_dict())
    ids, labels = mqar_batch(6, vocab=64, seq_len=40, pairs=5, seed=1)
    targets = query_targets(labels, 5)
    b_, t_ = (labels != IGNORE_INDEX).nonzero(as_tuple=True)
    assert torch.equal(targets[:, 0].flatten(), t_) and torch.equal(targets[:, 1].flatten(), labels[b_, t_])
    full = a(ids, labels=labels)
    part = QueryLoss(b)(ids, labels=targets)
    torch.testing.assert_close(part.logits.flatten(0, 1), full.logits[b_, t_], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(part.loss, full.loss, rtol=1e-6, atol=1e-7)
    full.loss.backward()
    part.loss.backward()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=lambda m, name=name: f"{name}: {m}")


def test_recall_accuracy_is_deterministic_and_takes_a_dict():
    s = dict(vocab=16, train=[[16, 2]], eval=[[16, 2]], train_steps=3, batch_size=4, eval_sequences=8, lrs=[3e-3])
    a = recall_accuracy(ATTN, s, seed=3)
    b = recall_accuracy(ATTN, MQARSettings.from_dict(s), seed=3)
    assert a == b and 0.0 <= a <= 1.0


def test_diverged_training_is_an_error_not_a_zero_recall():
    # a NaN weight (as a diverged run leaves) makes every later loss NaN; scoring that model would report a
    # 0% "recall" (seen on an H200 at seed scale), so training stops with an error naming the step and lr
    from hymba import HymbaLM

    s = MQARSettings(
        vocab=16, train=[(16, 2)], eval=[(16, 2)], train_steps=10, batch_size=4, eval_sequences=8, lrs=[3e-3]
    )
    model = HymbaLM(ATTN.replace(vocab_size=16))

    def poison(step, loss):
        if step == 2:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match=r"diverged at step 4 of 10: loss=nan.*\(lr=0.003 of recall.lrs\)"):
        train_mqar(model, s, callback=poison)


@pytest.mark.parametrize("device,poisoned_step", [("cpu", 3), pytest.param("cuda", 7, marks=pytest.mark.gpu)])
def test_divergence_found_when_losses_are_read_back_in_batches(device, poisoned_step):
    # without a callback the loop reads losses back every _SYNC_EVERY steps (on CUDA from pinned, non-blocking
    # batches); the error still names the first non-finite step, not the step of the read-back. Eager steps:
    # the pre-hook poisons; replayed CUDA graphs run no hooks (tests/train/test_step.py covers them)
    from hymba import HymbaLM
    from hymba.eval import mqar

    s = MQARSettings(
        vocab=16,
        train=[(16, 2)],
        eval=[(16, 2)],
        train_steps=mqar._SYNC_EVERY + 5,
        batch_size=4,
        eval_sequences=8,
        cuda_graphs=False,
    )
    model = HymbaLM(ATTN.replace(vocab_size=16)).to(device)
    calls = []

    def poison(module, args):
        calls.append(1)
        if len(calls) == poisoned_step:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    model.register_forward_pre_hook(poison)
    with pytest.raises(TrainingDiverged, match=rf"diverged at step {poisoned_step} of {s.train_steps}: loss=nan"):
        train_mqar(model, s, lr=3e-3, device=device)


@pytest.mark.gpu
def test_attention_learns_mqar_on_cuda_with_batched_read_back():
    # the CUDA path: pinned, non-blocking batches, bf16, losses read back every _SYNC_EVERY steps
    r = run_recall(ATTN, LEARN, device="cuda", seed=0)
    assert len(r.losses) == LEARN.train_steps and all(map(lambda x: x == x, r.losses))
    assert r.accuracy > 0.9, r.to_dict()


def test_out_of_memory_accumulates_micro_batches_instead_of_failing(caplog):
    """A batch that does not fit is split and its gradients accumulated: the same optimiser steps, losses and
    weights as the batch in one piece, and a logged note; evaluation halves its rows the same way."""
    from hymba import HymbaLM
    from hymba.eval.mqar import evaluate_mqar

    s = MQARSettings(
        vocab=64, train=[(32, 4)], eval=[(32, 4)], train_steps=4, batch_size=12, eval_sequences=24, eval_batch_size=24
    )
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, d_state=4, init_std=0.2)
    torch.manual_seed(0)
    whole, split = HymbaLM(cfg), HymbaLM(cfg)
    split.load_state_dict(whole.state_dict())
    fits = split.forward

    def small_memory(ids, **kw):  # a device that holds at most 5 sequences per forward
        if ids.shape[0] > 5:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return fits(ids, **kw)

    split.forward = small_memory
    with caplog.at_level("WARNING", logger="hymba.eval.mqar"):
        a, b = train_mqar(whole, s, lr=3e-3), train_mqar(split, s, lr=3e-3)
        acc_a, acc_b = evaluate_mqar(whole, s), evaluate_mqar(split, s)
    assert len(b) == len(a) == 4
    assert b == pytest.approx(a, rel=1e-5)
    for (name, p), q in zip(whole.named_parameters(), split.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
    assert acc_b == acc_a
    notes = [r.getMessage() for r in caplog.records]
    assert any("micro-batches of 3 rows" in n for n in notes), notes  # 12 -> 6 -> 3
    assert any("evaluating 24 x 32 tokens" in n for n in notes), notes


def _resumable():
    """A hybrid probe (SSM + attention) and seven steps with a curve point (and a saved state) every two."""
    s = MQARSettings(
        vocab=64,
        train=[(32, 4), (48, 6)],
        eval=[(32, 4)],
        train_steps=7,
        batch_size=8,
        warmup_steps=2,
        eval_every=2,
        target=None,
        check_sequences=8,
        eval_sequences=16,
        eval_batch_size=16,
    )
    return s, ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, d_state=4)


def test_a_run_cut_off_resumes_from_its_last_curve_point_and_ends_as_the_uninterrupted_run(tmp_path, caplog):
    from hymba import HymbaLM

    s, cfg = _resumable()
    torch.manual_seed(0)
    whole = HymbaLM(cfg)
    init = {k: v.clone() for k, v in whole.state_dict().items()}
    curve_a: list = []
    a = train_mqar(whole, s, lr=3e-3, curve=curve_a, checkpoint=tmp_path / "a.pt")
    assert torch.load(tmp_path / "a.pt", weights_only=True)["step"] == 6  # the last point before the last step

    cut = HymbaLM(cfg)
    cut.load_state_dict(init)

    def killed(step, loss):  # the job dies during the 5th step: the state saved after the 4th survives
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_mqar(cut, s, lr=3e-3, curve=[], checkpoint=tmp_path / "b.pt", callback=killed)
    assert torch.load(tmp_path / "b.pt", weights_only=True)["step"] == 4
    torch.manual_seed(1)
    again = HymbaLM(cfg)  # other weights: the saved ones are loaded
    curve_b: list = []
    resumed: list = []
    with caplog.at_level("INFO", logger="hymba.eval.mqar"):
        b = train_mqar(again, s, lr=3e-3, curve=curve_b, checkpoint=tmp_path / "b.pt", resumed=resumed)
    assert b == a and curve_b == curve_a and [p["step"] for p in curve_a] == [2, 4, 6]
    for (name, p), q in zip(whole.named_parameters(), again.parameters()):
        assert torch.equal(p, q), name
    assert [r["step"] for r in resumed] == [4] and resumed[0]["seconds"] > 0
    assert any("resuming the run (lr 0.003, seed 0) from step 4" in r.getMessage() for r in caplog.records)


def test_a_saved_state_of_another_run_is_not_resumed(tmp_path, caplog):
    from hymba import HymbaLM

    s, cfg = _resumable()
    torch.manual_seed(0)
    train_mqar(HymbaLM(cfg), s, lr=3e-3, checkpoint=tmp_path / "run.pt")
    for lr, settings in ((1e-3, s), (3e-3, dataclasses.replace(s, batch_size=4))):
        torch.manual_seed(0)
        fresh, other = HymbaLM(cfg), HymbaLM(cfg)
        other.load_state_dict(fresh.state_dict())
        caplog.clear()
        with caplog.at_level("WARNING", logger="hymba.eval.mqar"):
            got = train_mqar(fresh, settings, lr=lr, checkpoint=tmp_path / "run.pt")
        assert got == train_mqar(other, settings, lr=lr)  # from step 0, not from the other run's state
        assert any("holds a run of other settings" in r.getMessage() for r in caplog.records)
        assert torch.load(tmp_path / "run.pt", weights_only=True)["lr"] == lr  # overwritten by this run


@pytest.mark.gpu
def test_a_cut_off_run_resumes_on_cuda_with_graphed_steps(tmp_path):
    # the capturable optimizer (its learning rate a device tensor the CUDA graph reads) keeps its own
    # hyperparameters and takes the saved per-parameter state; the resumed steps replay new graphs
    from hymba import HymbaLM

    s, cfg = _resumable()
    torch.manual_seed(0)
    whole = HymbaLM(cfg).cuda()
    init = {k: v.clone() for k, v in whole.state_dict().items()}
    a = train_mqar(whole, s, lr=3e-3, device="cuda")
    cut = HymbaLM(cfg).cuda()
    cut.load_state_dict(init)

    def killed(step, loss):
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_mqar(cut, s, lr=3e-3, device="cuda", checkpoint=tmp_path / "b.pt", callback=killed)
    again = HymbaLM(cfg).cuda()
    b = train_mqar(again, s, lr=3e-3, device="cuda", checkpoint=tmp_path / "b.pt")
    assert b == pytest.approx(a, rel=1e-3)
    for (name, p), q in zip(whole.named_parameters(), again.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-3, atol=1e-4, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize(
    "device", [pytest.param("cpu", marks=pytest.mark.slow), pytest.param("cuda", marks=pytest.mark.gpu)]
)
def test_compiled_probe_trains_as_the_eager_one(device):
    """``recall.compile``: the probe's training steps under torch.compile (Inductor; one compile per training
    length, here two; on CUDA replayed as CUDA graphs) give the uncompiled steps' losses and weights up to
    rounding. Slow on CPU (about 90 s of compiling on 2 cores)."""
    from hymba import HymbaLM

    s, cfg = _resumable()
    s = dataclasses.replace(s, train_steps=6)
    torch.manual_seed(0)
    eager, compiled = HymbaLM(cfg).to(device), HymbaLM(cfg).to(device)
    compiled.load_state_dict(eager.state_dict())
    start = {k: v.detach().clone() for k, v in eager.named_parameters()}
    want = train_mqar(eager, s, lr=3e-3, device=device)
    torch._dynamo.reset()
    got = train_mqar(compiled, dataclasses.replace(s, compile=True), lr=3e-3, device=device)
    if device == "cpu":  # fp32: the same steps up to float rounding
        assert got == pytest.approx(want, rel=1e-4)
        for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
            torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
    else:  # bf16 autocast: Adam moves a weight whose gradient is rounding noise by ~lr either way, so the two
        # runs are compared by how far apart all weights end against how far training moved them. Per tensor
        # this is too strict: a norm weight with a near-zero gradient ended 7.4% of its (small) move apart
        # on an H100 (session 26) while the losses agreed to 2e-3.
        assert got == pytest.approx(want, rel=2e-3)
        apart = torch.cat([(q - p).flatten() for p, q in zip(eager.parameters(), compiled.parameters())]).norm()
        moved = torch.cat([(p - start[n]).flatten() for n, p in eager.named_parameters()]).norm()
        assert apart <= 0.05 * moved, f"weights {apart:.3g} apart, moved {moved:.3g}"
    assert not isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule)  # trained in place, returned as is
