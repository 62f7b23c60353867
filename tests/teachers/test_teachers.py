"""Teachers: signal checks, tokenizer refusal, self-teacher alignment, DAgger relabels, top-k wiring."""

import pytest
import torch
from helpers_envs import ScriptedPolicy
from helpers_models import tiny_model_from

from agentopd.core.rows import TeacherSignal, TrainRow, episode_row
from agentopd.envs.registry import make_env
from agentopd.recipes import TrainConfig
from agentopd.rollout.render import Renderer
from agentopd.teachers.check import TeacherSignalError, check_signal
from agentopd.teachers.local import HFTeacher, SelfTeacher, with_skill_card
from agentopd.teachers.oracle import OracleTeacher


def test_topk_gkd_with_the_whole_vocabulary_equals_full_gkd(tokenizer, tiny_model):
    """Wiring check: teacher top-k rows -> micro-batch -> loss, against the full-vocab path."""
    from agentopd.training.batching import collate
    from agentopd.training.learner import target_logits
    from agentopd.training.objectives import GKD, GKDTopK
    from agentopd.training.turn_stats import TurnAccumulator

    V = tiny_model.config.vocab_size
    rows = []
    for k, n in enumerate((30, 45)):  # two rows of different lengths: padding and row order matter
        ids = tuple(range(100 + k, 100 + k + n))
        mask = (0,) * 10 + (1,) * (n - 10)
        rows.append(TrainRow(ids, mask, (0.0,) * n, tuple(0 if m else -1 for m in mask)))
    student = tiny_model_from(tokenizer, seed=3)
    losses_by_k = {}
    for k in (0, V):
        objective = GKDTopK(k, temperature=0.9) if k else GKD(temperature=0.9)
        teacher = HFTeacher(tiny_model, tokenizer, tokenizer)
        batch = collate(teacher.score(rows, request=objective.request), tokenizer.pad_token_id)
        loss, metrics = TurnAccumulator().wrap(objective)(target_logits(student, batch, True), batch)
        losses_by_k[k] = float(loss.detach())
    assert losses_by_k[V] == pytest.approx(losses_by_k[0], rel=1e-4)
    with pytest.raises(ValueError, match="gkd_topk"):
        TrainConfig(teacher="self", loss="reverse_kl_pg", gkd_topk=5).validate()


def test_signal_check_refuses_missing_nan_or_constant_teacher():
    def row(tl):
        return TrainRow((1, 2, 3), (0, 1, 1), (0.0, -1.0, -2.0), (-1, 0, 0), signal=TeacherSignal(tl, (-1, 5, 5)))

    assert "teacher/logp_mean" in check_signal([row((0.0, -0.5, -3.0))])
    with pytest.raises(TeacherSignalError, match="scored"):
        check_signal([TrainRow((1, 2, 3), (0, 1, 1), (0.0, -1.0, -2.0), (-1, 0, 0))])
    with pytest.raises(TeacherSignalError, match="NaN"):
        check_signal([row((0.0, float("nan"), -1.0))])
    with pytest.raises(TeacherSignalError, match="constant"):
        check_signal([row((0.0, -10.8, -10.8))])


def test_hf_teacher_with_another_tokenizer_is_refused(tokenizer, tiny_model):
    import copy

    other = copy.deepcopy(tokenizer)
    other.add_tokens(["<brand_new_token>"])
    with pytest.raises(ValueError, match="tokenizer differs"):
        HFTeacher(tiny_model, other, tokenizer)


def oracle_turns(ep, make_env):
    """The reference DAgger once computed: replay the episode, ask the oracle before each turn."""
    env = make_env()
    env.reset(seed=ep.seed, options={"task": ep.task_id})
    out = []
    for t in ep.turns:
        out.append(env.unwrapped.oracle_action())
        *_, term, trunc, _ = env.step(t.text)
        if term or trunc:
            break
    return out


def _oracle_script_episode(tokenizer, task_index=1, wrong_first=False):
    from agentopd.inference.sampling import SamplingParams
    from agentopd.rollout.runner import RolloutConfig, run_episodes

    env = make_env("agentopd/Calc-v0")
    task = env.unwrapped.tasks[task_index]
    env.reset(options={"task": task.id})
    script = ["Answer: 1"] if wrong_first else []
    if not wrong_first:
        while True:
            a = env.unwrapped.oracle_action()
            script.append(a)
            *_, term, trunc, _ = env.step(a)
            if term or trunc:
                break
    (ep,) = run_episodes(lambda: make_env("agentopd/Calc-v0"), ScriptedPolicy(tokenizer, script), [task.id], [0],
                         RolloutConfig(SamplingParams(max_new_tokens=64)))
    return ep


def test_self_teacher_sees_the_same_tokens_after_its_system_message(tokenizer, tiny_model):
    ep = _oracle_script_episode(tokenizer)
    env = make_env("agentopd/Calc-v0")
    env.reset(options={"task": ep.task_id})
    teacher_ids, teacher_offset = with_skill_card(ep, env.unwrapped.skill_card(), Renderer(tokenizer))
    prefix = len(Renderer(tokenizer).full_ids([ep.messages[0]]))
    assert teacher_offset > 0
    assert teacher_ids[prefix + teacher_offset:] == ep.token_ids[prefix:]
    assert "golden_workflow" in tokenizer.decode(teacher_ids[: prefix + teacher_offset])
    # the teacher's logprob of each student token comes from the aligned teacher position
    scored = SelfTeacher(tiny_model, tokenizer).score([episode_row(ep)], [(teacher_ids, teacher_offset)])[0]
    with torch.no_grad():
        logp = torch.log_softmax(tiny_model(torch.tensor([teacher_ids])).logits[0].float(), -1)
    t = ep.turns[0]
    for p in range(t.start, t.end):
        assert scored.teacher_logp[p] == pytest.approx(logp[p - 1 + teacher_offset, ep.token_ids[p]].item(), abs=1e-5)


def test_oracle_teacher_relabels_the_states_the_student_reached(tokenizer):
    ep = _oracle_script_episode(tokenizer, task_index=1, wrong_first=True)  # student answers "1" at once
    rows = OracleTeacher(tokenizer).relabel([ep])
    assert len(rows) == ep.num_turns
    expert = oracle_turns(ep, lambda: make_env("agentopd/Calc-v0"))
    assert [t.oracle_action for t in ep.turns] == expert  # what step recorded is what a replay asks
    for r, t, text in zip(rows, ep.turns, expert):
        assert r.input_ids[: t.start] == ep.token_ids[: t.start]  # the student's own prefix
        target = [i for i, m in zip(r.input_ids, r.loss_mask) if m]
        assert tokenizer.decode(target[:-1]) == text and target[-1] == tokenizer.eos_token_id
    assert "calculator" in expert[0]  # the expert would have used the tool here
