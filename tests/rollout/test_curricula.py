"""TCOD's plans in the runner (turn windows, oracle replays), the loop stop, and the curricula."""

import pytest
from helpers_envs import ScriptedPolicy

from agentopd.core.types import StopReason
from agentopd.envs.registry import make_env
from agentopd.inference.sampling import SamplingParams
from agentopd.rollout.oracle import OraclePolicy
from agentopd.rollout.render import Renderer
from agentopd.rollout.runner import RolloutConfig, run_episodes
from agentopd.rollout.tasks import BackwardReplay, ForwardWindow, KLWindow, UniformTasks
from agentopd.tools.core import format_tool_call

CALC = lambda: make_env("agentopd/Calc-v0", split="train")  # noqa: E731
CFG = RolloutConfig(SamplingParams(max_new_tokens=64), max_context_tokens=100_000)
CALL = format_tool_call("calculator", {"expression": "1 + 1"})


def _oracle_turns(tokenizer, task=0):
    (ep,) = run_episodes(CALC, OraclePolicy(), [task], [0], CFG, tokenizer=tokenizer)
    return ep


def test_same_tool_call_three_times_stops_the_episode(tokenizer):
    cfg = RolloutConfig(CFG.sampling, CFG.max_context_tokens, stop_repeats=3)
    (ep,) = run_episodes(CALC, ScriptedPolicy(tokenizer, [CALL]), [0], [0], cfg)
    assert ep.stop_reason == StopReason.LOOP and ep.num_turns == 3 and not ep.success
    (ep,) = run_episodes(CALC, ScriptedPolicy(tokenizer, [CALL]), [0], [0], CFG)  # off: the whole budget
    assert ep.stop_reason == StopReason.TURN_LIMIT and ep.num_turns == 12
    calls = [format_tool_call("calculator", {"expression": f"{i} + 1"}) for i in range(12)]
    (ep,) = run_episodes(CALC, ScriptedPolicy(tokenizer, calls), [0], [0], cfg)  # different calls are no loop
    assert ep.stop_reason == StopReason.TURN_LIMIT
    other = format_tool_call("calculator", {"expression": "2 + 2"})
    (ep,) = run_episodes(CALC, ScriptedPolicy(tokenizer, [CALL, other, CALL, other, CALL]), [0], [0], cfg)
    assert ep.stop_reason == StopReason.LOOP and ep.num_turns == 5  # the third 1 + 1, not in a row


def test_window_cuts_the_episode_after_w_student_turns(tokenizer):
    cfg = RolloutConfig(CFG.sampling, CFG.max_context_tokens, max_student_turns=2)
    (ep,) = run_episodes(CALC, ScriptedPolicy(tokenizer, [CALL]), [0], [0], cfg)
    assert ep.stop_reason == StopReason.WINDOW and ep.num_turns == 2 and not ep.success
    expert = _oracle_turns(tokenizer)  # an episode that ends inside the window is not cut
    script = [t.text for t in expert.turns]
    cfg = RolloutConfig(CFG.sampling, CFG.max_context_tokens, max_student_turns=len(script) + 3)
    (ep,) = run_episodes(CALC, ScriptedPolicy(tokenizer, script), [0], [0], cfg)
    assert ep.success and ep.stop_reason == StopReason.DONE


@pytest.mark.parametrize("k", [1, 2])
def test_replayed_oracle_turns_are_history_only(tokenizer, k):
    expert = _oracle_turns(tokenizer)
    assert expert.num_turns > k
    rest = [t.text for t in expert.turns[k:]]  # the student finishes what the oracle started
    (ep,) = run_episodes(CALC, ScriptedPolicy(tokenizer, rest), [0], [0], CFG, replay=[k])
    assert ep.success and ep.num_turns == expert.num_turns
    assert [t.replayed for t in ep.turns] == [True] * k + [False] * len(rest)
    for t in ep.turns:
        assert set(ep.loss_mask[t.start : t.end]) == ({0} if t.replayed else {1})
    assert [t.text for t in ep.turns[:k]] == [t.text for t in expert.turns[:k]]
    assert list(ep.token_ids) == Renderer(tokenizer).full_ids(ep.messages)  # one rendering, no drift
    # the window counts student turns only
    cfg = RolloutConfig(CFG.sampling, CFG.max_context_tokens, max_student_turns=1)
    (ep,) = run_episodes(CALC, ScriptedPolicy(tokenizer, [CALL]), [0], [0], cfg, replay=[k])
    assert ep.num_turns == k + 1 and ep.stop_reason == StopReason.WINDOW


def test_replaying_the_whole_oracle_ends_the_episode_before_the_student(tokenizer):
    expert = _oracle_turns(tokenizer)
    pol = ScriptedPolicy(tokenizer, [CALL])
    (ep,) = run_episodes(CALC, pol, [0], [0], CFG, replay=[expert.num_turns + 2])
    assert ep.success and pol.calls == 0 and sum(ep.loss_mask) == 0


def test_f2b_window_schedule_and_b2f_replay_schedule():
    ids = [f"t{i}" for i in range(20)]
    f2b = ForwardWindow(ids, seed=0, every=3, max_window=4, offset=2)  # 2 warm-start steps come first
    assert [f2b.sample(s, 4).window for s in range(2, 16)] == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 4, 4]
    assert f2b.sample(5, 4).task_ids == UniformTasks(ids, 0).sample(5, 4).task_ids  # same tasks as uniform
    turns = {t: 1 + i % 4 for i, t in enumerate(ids)}  # N_expert per task
    b2f = BackwardReplay(ids, seed=0, every=2, expert_turns=lambda ts: [turns[t] for t in ts])
    for s in range(8):
        batch = b2f.sample(s, 5)
        assert batch.replay == tuple(max(0, turns[t] - 1 - s // 2) for t in batch.task_ids)
    assert b2f.update(7, [], {})["curriculum/back"] == 3


def test_kl_window_widens_when_the_frontier_kl_is_small():
    kl = KLWindow([f"t{i}" for i in range(10)], seed=0, threshold=0.2, max_window=3)
    assert kl.sample(0, 2).window == 1
    m = kl.update(0, [], {"turn/0/teacher_kl": 0.5})
    assert m == {"curriculum/window": 1.0, "curriculum/frontier_kl": 0.5} and kl.w == 1  # not yet
    kl.update(1, [], {"turn/0/teacher_kl": 0.1})
    assert kl.w == 2 and kl.sample(2, 2).window == 2
    kl.update(2, [], {"turn/0/teacher_kl": 0.0})  # the frontier is turn 1 now: no episode reached it
    assert kl.w == 3
    kl.update(3, [], {"turn/2/teacher_kl": 0.0})
    assert kl.w == 3  # at the widest
    fresh = KLWindow(kl.task_ids, 0, 0.2, 3)
    fresh.load_state_dict(kl.state_dict())
    assert fresh.w == 3
