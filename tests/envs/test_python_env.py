"""The python family: the oracle solves its tasks through gymnasium, recovers from detours, is
deterministic; tool errors come back as tool messages; the verifier rejects wrong answers."""

from __future__ import annotations

import random

import gymnasium as gym
import pytest

import agentopd  # noqa: F401  (registers agentopd/Python-v0)
from agentopd.envs.python import PythonEnv, answer_matches, shows
from agentopd.envs.suites import load_tasks
from agentopd.tools.core import format_tool_call

ENV_ID = "agentopd/Python-v0"


def _solve(env: gym.Env, task_id: str) -> list[str]:
    """Play the oracle on one task; assert every turn passes the per-turn check."""
    env.reset(seed=0, options={"task": task_id})
    actions = []
    for _ in range(12):
        action = env.unwrapped.oracle_action()
        actions.append(action)
        _, _, terminated, truncated, info = env.step(action)
        assert info["oracle_ok"], f"{task_id}: oracle turn {info['turn']} failed its own check"
        assert info["tool_errors"] == 0, f"{task_id}: {info['tool_results']}"
        if terminated or truncated:
            break
    assert terminated and info["success"], f"{task_id}: not solved"
    assert 2 <= len(actions) <= 8
    return actions


def _sample(split: str, n: int) -> list[str]:
    tasks = load_tasks("python", split)
    rng = random.Random(0)
    picked = rng.sample(tasks, n)
    for d in (1, 2, 3):  # cover every difficulty
        if not any(t.difficulty == d for t in picked):
            picked.append(next(t for t in tasks if t.difficulty == d))
    return [t.id for t in picked]


def test_oracle_solves_a_sample_of_both_splits():
    for split, n in (("train", 14), ("test", 6)):
        env = gym.make(ENV_ID, split=split)
        for task_id in _sample(split, n):
            _solve(env, task_id)


# Every task of both splits: tests/test_envs.py runs the env checker over the whole suite.


def _multi_step_task(split: str = "train"):
    return next(t for t in load_tasks("python", split) if len(t.data["code"][0]) >= 2 and len(t.requests) >= 2)


def test_oracle_recovers_off_the_golden_path():
    task = _multi_step_task()
    env = gym.make(ENV_ID)
    env.reset(options={"task": task.id})
    steps = task.data["code"][0]
    golden = format_tool_call("python", {"code": steps[0]})
    assert env.unwrapped.oracle_action() == golden
    # a detour: code that fails, then code that prints something irrelevant
    _, _, _, _, info = env.step(format_tool_call("python", {"code": "print(undefined_name)"}))
    assert info["tool_errors"] == 1 and not info["oracle_ok"]
    _, _, _, _, info = env.step(format_tool_call("python", {"code": "print('hello')"}))
    assert not info["oracle_ok"]
    assert env.unwrapped.oracle_action() == golden  # still the first step
    # the student's own code for the LAST step (different text, same value) skips ahead
    last = task.data["outputs"][0][-1]
    obs, _, _, _, info = env.step(format_tool_call("python", {"code": f"x = {last!r}\nprint(x)"}))
    assert info["oracle_ok"] and obs[0]["content"] == last
    assert env.unwrapped.oracle_action() == f"Answer: {task.data['answers'][0]}"
    # a wrong answer to request 1: the oracle still solves request 2 (it uses the true answer)
    obs, reward, terminated, _, info = env.step("Answer: -12345")
    assert reward == 0.0 and not terminated and info["request_success"] == [False]
    assert obs[0]["role"] == "user" and obs[0]["content"] == task.requests[1]
    while not terminated:
        _, reward, terminated, _, info = env.step(env.unwrapped.oracle_action())
        assert info["oracle_ok"]
    assert info["request_success"][0] is False and all(info["request_success"][1:])
    assert not info["success"]


def test_oracle_answers_immediately_when_a_single_call_did_everything():
    task = next(t for t in load_tasks("python", "train") if len(t.data["code"][0]) == 3)
    env = gym.make(ENV_ID)
    env.reset(options={"task": task.id})
    outs = task.data["outputs"][0]
    _, _, _, _, info = env.step(format_tool_call("python", {"code": f"print({outs[0]!r}, {outs[-1]!r})"}))
    assert info["oracle_ok"]
    assert env.unwrapped.oracle_action().startswith("Answer:")


def test_deterministic_transcripts():
    def transcript(seed: int) -> list:
        env = gym.make(ENV_ID, split="test")
        obs, info = env.reset(seed=seed)
        out = [info["task_id"], *obs]
        terminated = False
        while not terminated:
            obs, reward, terminated, _, _ = env.step(env.unwrapped.oracle_action())
            out += [*obs, reward]
        return out

    assert transcript(3) == transcript(3)
    assert transcript(3) != transcript(4)


def test_tool_errors_come_back_as_tool_messages():
    env = gym.make(ENV_ID, timeout_s=1.0)
    env.reset(seed=0)
    obs, _, terminated, _, info = env.step(format_tool_call("python", {"code": "raise KeyError('nope')"}))
    assert not terminated and info["tool_errors"] == 1
    assert obs[0]["role"] == "tool" and obs[0]["name"] == "python"
    assert "KeyError" in obs[0]["content"] and info["tool_results"][0].error == "tool_error"
    obs, _, _, _, info = env.step(format_tool_call("python", {"code": "while True:\n    pass"}))
    assert info["tool_results"][0].error == "timeout" and "limit" in obs[0]["content"]
    obs, _, _, _, info = env.step(format_tool_call("python", {"source": "print(1)"}))
    assert info["tool_results"][0].error == "bad_arguments"
    obs, _, _, _, info = env.step("<tool_call>{not json</tool_call>")
    assert info["tool_results"][0].error == "parse" and obs[0]["role"] == "tool"


def test_verifier_rejects_wrong_answers():
    env = gym.make(ENV_ID, split="test")
    task = next(t for t in env.unwrapped.tasks if len(t.requests) == 1)
    env.reset(options={"task": task.id})
    _, reward, terminated, _, info = env.step("Answer: I am not sure")
    assert terminated and reward == 0.0 and not info["success"]
    for t in load_tasks("python", "test"):
        right = t.data["answers"][0]
        assert answer_matches(f"Answer: {right}", right, t.data["kinds"][0])


@pytest.mark.parametrize(
    ("answer", "expected", "kind", "ok"),
    [
        ("Answer: 2791715456571051233611642553", "2791715456571051233611642553", "int", True),
        ("Answer: 2791715456571051233611642000", "2791715456571051233611642553", "int", False),
        ("The count is 7.\nAnswer: 7.0", "7", "int", True),
        ("Answer: 5393. It is the 711th prime.", "5393", "int", True),
        ("Answer: 711", "5393", "int", False),
        ("Answer: 44.17", "44.17", "float", True),
        ("Answer: 44.2", "44.17", "float", False),
        ("Answer: **Green**.", "green", "text", True),
        ("Answer: greens", "green", "text", False),
        ("Answer: [Eli, Rosa]", "Eli, Rosa", "list", True),
        ("Answer: Rosa, Eli", "Eli, Rosa", "list", False),
        ("Answer: Eli", "Eli, Rosa", "list", False),
        ("Answer: yes", "no", "text", False),
    ],
)
def test_answer_matching(answer, expected, kind, ok):
    assert answer_matches(answer, expected, kind) is ok


def test_shows_matches_values_not_coincidences():
    assert shows("mean = 52.36", "52.357142857142854")
    assert not shows("52", "52.357142857142854")
    assert shows("2791715456571051233611642553\n", "2791715456571051233611642553")
    assert not shows("2791715456571051233611642000", "2791715456571051233611642553")
    assert shows("The answer is Eli, Rosa", "Eli, Rosa") and not shows("Elias", "Eli")


def test_skill_card_and_registration():
    env = gym.make(ENV_ID)
    assert isinstance(env.unwrapped, PythonEnv) and env.unwrapped.family == "python"
    env.reset(seed=1)
    card = env.unwrapped.skill_card()
    assert set(card) == {"success_analysis", "mistake_analysis", "golden_workflow"}
    assert card["golden_workflow"][-1].startswith(f"request {len(env.unwrapped.task.requests)}: Answer:")
    schema = env.unwrapped.toolset.schemas[0]["function"]
    assert schema["name"] == "python" and "from scratch" in schema["parameters"]["properties"]["code"]["description"]
