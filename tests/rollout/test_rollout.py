import math

import gymnasium as gym
import pytest
from helpers_envs import ScriptedPolicy

from agentopd.core.types import StopReason
from agentopd.envs.registry import make_env
from agentopd.inference.sampling import SamplingParams
from agentopd.rollout.render import Renderer
from agentopd.rollout.runner import RolloutConfig, run_episodes
from agentopd.tools.core import format_tool_call

CALC = lambda: make_env("agentopd/Calc-v0", split="train")  # noqa: E731
CFG = RolloutConfig(SamplingParams(max_new_tokens=24, temperature=1.0, seed=5), max_context_tokens=2048)


def _check_invariants(ep):
    n = len(ep.token_ids)
    assert len(ep.loss_mask) == len(ep.logprobs) == n
    in_span = [0] * n
    for t in ep.turns:
        assert 0 <= t.start < t.end <= n
        for i in range(t.start, t.end):
            in_span[i] = 1
    assert list(ep.loss_mask) == in_span  # only sampled tokens carry loss
    assert all(lp == 0.0 for lp, m in zip(ep.logprobs, ep.loss_mask) if not m)
    assert all(lp <= 0.0 and math.isfinite(lp) for lp in ep.logprobs)
    assert [t.index for t in ep.turns] == list(range(len(ep.turns)))


def test_batched_rollout_with_tiny_model(tiny_policy):
    eps = run_episodes(CALC, tiny_policy, [0, 1, 2, 3, 4], [0, 1, 2, 3, 4], CFG, "agentopd/Calc-v0")
    assert len(eps) == 5
    for ep in eps:
        _check_invariants(ep)
        assert ep.stop_reason in (StopReason.DONE, StopReason.TURN_LIMIT, StopReason.TOKEN_LIMIT)
        assert ep.num_turns >= 1
    again = run_episodes(CALC, tiny_policy, [0, 1, 2, 3, 4], [0, 1, 2, 3, 4], CFG, "agentopd/Calc-v0")
    assert [e.token_ids for e in eps] == [e.token_ids for e in again]  # reproducible


def test_scripted_oracle_like_rollout_solves_and_matches_full_render(tokenizer):
    env = CALC()
    task = env.unwrapped.tasks[1]  # a one-request, two-step word problem
    env.reset(options={"task": task.id})
    script = []
    while True:
        a = env.unwrapped.oracle_action()
        script.append(a)
        *_, term, trunc, _ = env.step(a)
        if term or trunc:
            break
    pol = ScriptedPolicy(tokenizer, script)
    (ep,) = run_episodes(CALC, pol, [task.id], [0], RolloutConfig(SamplingParams(max_new_tokens=64)))
    _check_invariants(ep)
    assert ep.success and ep.stop_reason == StopReason.DONE
    assert all(t.oracle_ok for t in ep.turns)
    assert list(ep.token_ids) == Renderer(tokenizer).full_ids(ep.messages)
    for t in ep.turns:  # each span decodes back to the turn text (+ the end-of-turn token)
        assert tokenizer.decode(ep.token_ids[t.start : t.end - 1]) == t.text


def test_turn_limit_and_token_limit(tokenizer):
    looping = ScriptedPolicy(tokenizer, [format_tool_call("calculator", {"expression": "1 + 1"})])
    (ep,) = run_episodes(CALC, looping, [0], [0], RolloutConfig(SamplingParams(max_new_tokens=64), max_context_tokens=100_000))
    assert ep.stop_reason == StopReason.TURN_LIMIT
    assert ep.num_turns == gym.spec("agentopd/Calc-v0").max_episode_steps
    assert not ep.success
    looping = ScriptedPolicy(tokenizer, [format_tool_call("calculator", {"expression": "1 + 1"})])
    (ep,) = run_episodes(CALC, looping, [0], [0], RolloutConfig(SamplingParams(max_new_tokens=64), max_context_tokens=700))
    assert ep.stop_reason == StopReason.TOKEN_LIMIT
    assert len(ep.token_ids) + 64 > 700


def test_infrastructure_failure_becomes_error_episode(tokenizer):
    from helpers_envs import BrokenEnv

    pol = ScriptedPolicy(tokenizer, [format_tool_call("shout", {"text": "x"})])
    (ep,) = run_episodes(lambda: BrokenEnv(), pol, ["echo-0"], [0], RolloutConfig(SamplingParams(max_new_tokens=64)))
    assert ep.stop_reason == StopReason.ERROR
    assert "disk went away" in ep.error
    assert not ep.success


def _multi_turn_rollout(policy, temperature=0.0):
    cfg = RolloutConfig(SamplingParams(max_new_tokens=12, temperature=temperature, seed=2), max_context_tokens=4096)
    return run_episodes(CALC, policy, [0, 2, 5, 7], [0, 1, 2, 3], cfg)


def test_prefix_cache_changes_nothing_but_the_work(tiny_model, tokenizer):
    """Shared-prompt and cross-turn KV reuse must give the same ids and logprobs as full prefills."""
    import torch

    from agentopd.inference.hf import HFPolicy

    cached, plain = HFPolicy(tiny_model, tokenizer), HFPolicy(tiny_model, tokenizer, prefix_cache=False)
    a, b = _multi_turn_rollout(cached), _multi_turn_rollout(plain)
    assert max(e.num_turns for e in a) >= 2
    assert cached.prefix_cache.hit_tokens > 0 and plain.prefix_cache is None
    assert [e.token_ids for e in a] == [e.token_ids for e in b]
    for x, y in zip(a, b):
        assert list(x.logprobs) == pytest.approx(list(y.logprobs), abs=1e-4)
    # every sampled token's logprob equals a teacher-forced forward over the whole episode
    ep = max(a, key=lambda e: e.num_turns)
    with torch.no_grad():
        logp = torch.log_softmax(tiny_model(torch.tensor([ep.token_ids])).logits[0].float(), -1)
    for t in ep.turns:
        ref = [logp[i - 1, ep.token_ids[i]].item() for i in range(t.start, t.end)]
        assert list(ep.logprobs[t.start : t.end]) == pytest.approx(ref, abs=1e-4)
    cached.invalidate()
    assert not cached.prefix_cache.entries


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_continuous_batching_plays_the_same_episodes_as_lockstep(tiny_model, tokenizer, temperature):
    """Draws are keyed by (episode, turn), so the schedule (continuous on the engine, lock-step
    on the engine or on transformers' forward) changes nothing that is sampled or recorded."""
    from agentopd.inference.hf import HFPolicy

    sp = SamplingParams(max_new_tokens=12, temperature=temperature, seed=2)
    runs = []
    for engine, continuous in (("engine", True), ("engine", False), ("hf", False), ("hf", True)):
        cfg = RolloutConfig(sp, max_context_tokens=4096, continuous=continuous)
        turns: list[int] = []
        eps = run_episodes(CALC, HFPolicy(tiny_model, tokenizer, engine=engine), [0, 2, 5, 7, 9, 11],
                           list(range(6)), cfg, on_turn=lambda n, live, turns=turns: turns.append(n))
        assert turns and turns[-1] == sum(e.num_turns for e in eps)
        runs.append(eps)
    assert max(e.num_turns for e in runs[0]) >= 2
    for other in runs[1:]:
        assert [e.token_ids for e in other] == [e.token_ids for e in runs[0]]
        assert [e.stop_reason for e in other] == [e.stop_reason for e in runs[0]]
        for x, y in zip(runs[0], other):
            assert list(x.logprobs) == pytest.approx(list(y.logprobs), abs=1e-4)
            _check_invariants(x)


def test_continuous_batching_does_not_wait_for_the_slowest_row(tokenizer):
    """A slow env of one episode must not hold the others: while it sleeps, the rest take their
    next turns (continuous); lock-step waits for it at every turn."""
    import threading
    import time

    from helpers_envs import EchoEnv, ScriptedStream

    order: list[bool] = []
    lock = threading.Lock()

    class Slow(gym.Wrapper):
        def __init__(self, env, delay):
            super().__init__(env)
            self.delay = delay

        def step(self, action):
            time.sleep(self.delay)
            out = self.env.step(action)
            with lock:
                order.append(self.delay > 0)
            return out

    policy = ScriptedStream(tokenizer, [format_tool_call("shout", {"text": "hello"}), "Answer: HELLO"])
    firsts = {}
    for continuous in (True, False):
        order.clear()
        made = iter([0.5] + [0.0] * 3)
        cfg = RolloutConfig(SamplingParams(max_new_tokens=64), continuous=continuous)
        eps = run_episodes(lambda made=made: Slow(EchoEnv(), next(made)), policy, ["echo-0"] * 4, list(range(4)), cfg)
        assert [e.num_turns for e in eps] == [2, 2, 2, 2] and all(e.success for e in eps)
        firsts[continuous] = order.index(True)  # fast env steps done before the slow one answered
    assert firsts[False] == 3  # lock-step: every turn waits for the slowest env
    assert firsts[True] == 6  # continuous: the fast episodes finished both turns meanwhile


def test_an_episodes_next_turn_goes_ahead_of_new_episodes(tiny_model, tokenizer, monkeypatch):
    """With more episodes than rows, a continuing turn is admitted before episodes not yet
    started, so its history is still in a small prefix cache: every continuing turn prefills
    only its new tokens (before, it queued behind the new episodes and, its entry evicted,
    prefilled its whole context again)."""
    from agentopd.inference.engine import DecodeEngine
    from agentopd.inference.hf import HFPolicy

    cfg = RolloutConfig(SamplingParams(max_new_tokens=12, temperature=1.0, seed=2), max_context_tokens=4096)
    tasks = list(range(16))
    first = run_episodes(CALC, HFPolicy(tiny_model, tokenizer, engine="engine", max_batch=2), tasks, tasks, cfg)
    mc = tiny_model.config
    per_token = 2 * mc.num_hidden_layers * mc.num_key_value_heads * (mc.hidden_size // mc.num_attention_heads) * 4
    cached: dict[tuple[int, ...], int] = {}
    prefill = DecodeEngine.prefill

    def spy(self, rows):
        cached.update((tuple(ids), n) for ids, n, _, _ in rows)
        return prefill(self, rows)

    monkeypatch.setattr(DecodeEngine, "prefill", spy)
    pol = HFPolicy(tiny_model, tokenizer, engine="engine", max_batch=2,
                   prefix_cache_bytes=4 * max(len(e.token_ids) for e in first) * per_token)  # ~4 histories
    eps = run_episodes(CALC, pol, tasks, tasks, cfg)
    assert [e.token_ids for e in eps] == [e.token_ids for e in first]  # the schedule changes no draw
    later = [(cached[tuple(e.token_ids[: t.start])], prev.end - 1)
             for e in eps for prev, t in zip(e.turns, e.turns[1:])]
    assert len(later) >= 6
    # each continuing turn found the previous turn's prompt and reply (all but the reply's
    # last token, which the row never fed back) in the cache
    assert all(n >= want for n, want in later), later
