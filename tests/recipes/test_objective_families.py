"""The objective families end to end on a tiny model: one or two steps of each, their per-token
diagnostics under loss/, G-OPD with lambda 1 reaching exactly reverse_kl_pg's weights, TIP's
kept fraction and its cut of the teacher's per-target lists, SDPO's privileged contexts."""

import json

import pytest
import torch

from agentopd.recipes import TrainConfig
from agentopd.recipes import train as main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tokenizer):
    """Another tiny model (other weights, same tokenizer): a teacher that disagrees with the student."""
    from helpers_models import tiny_model_from

    d = tmp_path_factory.mktemp("teacher")
    tiny_model_from(tokenizer, seed=1).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def _cfg(tiny_dir, out, **kw):
    base = dict(student=f"hf:{tiny_dir}", steps=1, episodes_per_step=2, out=str(out),
                max_new_tokens=8, max_turns=2, eval_every=0, ckpt_every=1, warm_start_steps=0, dtype="float32",
                seed=3)
    return TrainConfig(**{**base, **kw})


def _metrics(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("loss, topk, key", [("akl", 0, "loss/head_weight"), ("akl", 6, "loss/head_weight"),
                                             ("todi", 0, "loss/fkl_weight"), ("todi", 6, "loss/fkl_weight"),
                                             ("eopd", 0, "loss/high_entropy_frac"), ("gopd", 0, "teacher/ref_gap")])
def test_one_step_of_each_objective_logs_its_diagnostics(tiny_dir, teacher_dir, tmp_path, loss, topk, key):
    last = main(_cfg(tiny_dir, tmp_path / "run", teacher="self" if loss == "gopd" else f"hf:{teacher_dir}",
                     loss=loss, gkd_topk=topk))
    assert key in last and last["learner/grad_norm"] > 0
    if loss in ("akl", "todi", "eopd"):
        assert last["loss/teacher_entropy"] > 0
    assert (tmp_path / "run" / "latest").read_text().strip() == "step_1"


def _weights(run):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(run / (run / "latest").read_text().strip()).state_dict()


def test_gopd_with_lambda_one_is_reverse_kl_pg(tiny_dir, tmp_path):
    main(_cfg(tiny_dir, tmp_path / "a", teacher="self", loss="gopd", gopd_lambda=1.0))
    main(_cfg(tiny_dir, tmp_path / "b", teacher="self", loss="reverse_kl_pg"))
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    main(_cfg(tiny_dir, tmp_path / "c", teacher="self", loss="gopd", gopd_lambda=1.5))
    c = _weights(tmp_path / "c")
    assert any(not torch.equal(a[k], c[k]) for k in a)  # lambda != 1 moves the weights elsewhere


@pytest.mark.parametrize("loss, topk, gamma", [("reverse_kl_pg", 0, 1.0), ("gkd", 6, 1.0), ("reverse_kl_pg", 0, 0.0)])
def test_tip_keeps_the_ratio_of_tokens(tiny_dir, teacher_dir, tmp_path, loss, topk, gamma):
    last = main(_cfg(tiny_dir, tmp_path / "run", teacher=f"hf:{teacher_dir}", loss=loss, gkd_topk=topk, tip_ratio=0.5, tip_gamma=gamma))
    assert 0.4 <= last["loss/kept_frac"] <= 0.5
    assert last["loss/kept_student_entropy"] > 0
    assert last["learner/target_tokens"] >= 1


def test_tip_with_a_sampled_token_teacher_and_gamma_needs_a_distribution():
    with pytest.raises(ValueError, match="tip_gamma"):
        TrainConfig(teacher="openai:m@http://x/v1", loss="reverse_kl_pg", tip_ratio=0.5).validate()
    TrainConfig(teacher="openai:m@http://x/v1", loss="reverse_kl_pg", tip_ratio=0.5, tip_gamma=0).validate()
    with pytest.raises(ValueError, match="tip_ratio"):
        TrainConfig(teacher="oracle", loss="dagger", tip_ratio=0.5).validate()


def test_select_tokens_cuts_the_teachers_lists_with_the_mask(tiny_dir, tiny_model, tokenizer):
    from agentopd.core.capabilities import Signal, SignalRequest
    from agentopd.core.rows import TrainRow
    from agentopd.teachers.local import HFTeacher
    from agentopd.training.selection import select_tokens

    rows = [TrainRow(tuple(range(100, 140)), (0,) * 10 + (1,) * 30, (0.0,) * 40, (-1,) * 10 + (0,) * 30),
            TrainRow(tuple(range(200, 225)), (0,) * 5 + (1,) * 20, (0.0,) * 25, (-1,) * 5 + (0,) * 20)]
    teacher = HFTeacher(tiny_model, tokenizer, tokenizer)
    for req in (SignalRequest(Signal.TOPK_LOGPROBS, topk=4), SignalRequest(Signal.FULL_LOGITS)):
        scored = teacher.score(rows, request=req)
        kept, m = select_tokens(tiny_model, scored, 0.3, seed=1)
        assert sum(r.n_targets for r in kept) == int(0.3 * 50) and m["loss/kept_frac"] == pytest.approx(0.3)
        for before, after in zip(scored, kept):  # TrainRow re-checks the per-target lengths
            old_targets = [q for q in range(1, len(before.input_ids)) if before.loss_mask[q]]
            idx = [j for j, q in enumerate(old_targets) if after.loss_mask[q]]
            assert set(q for q in range(len(after.input_ids)) if after.loss_mask[q]) <= set(old_targets)
            if req.kind == Signal.TOPK_LOGPROBS:
                assert after.signal.topk_ids == tuple(before.signal.topk_ids[j] for j in idx)
            else:
                assert torch.equal(after.signal.target_logp, before.signal.target_logp[idx])


def test_sdpo_runs_with_sibling_or_feedback_contexts(tiny_dir, tmp_path):
    last = main(_cfg(tiny_dir, tmp_path / "run", teacher="self", loss="sdpo", episodes_per_step=4, group_size=2))
    assert 0.0 <= last["sdpo/sibling_context_frac"] <= 1.0 and "loss/sdpo_gap" in last
    assert last["loss/ratio_mean"] == pytest.approx(1.0, abs=1e-3)  # on-policy: mu is the learner's own


def test_sdpo_context_prefers_a_successful_sibling():
    from agentopd.core.types import Episode, StopReason
    from agentopd.recipes.sdpo import with_context

    def ep(task, ok):
        return Episode("e", task, 0, (1,), (0.0,), (0,), (), (), 1.0 if ok else 0.0, ok,
                       StopReason.DONE if ok else StopReason.TURN_LIMIT)

    eps, n = with_context([ep("a", True), ep("a", False), ep("b", False), ep("b", False)])
    assert n == 1
    assert "successful_attempt" in eps[1].skill_card  # a's failure sees its successful sibling
    assert "feedback" in eps[0].skill_card  # a's success has no other successful sibling
    assert "did not solve" in eps[2].skill_card["feedback"]
