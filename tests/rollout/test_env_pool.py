"""The env pools: Ray actors play exactly the episodes the local threads play; a hung step ends
only its own episode, quickly, in either pool, and neither pool's close waits for it; a bad
``--env-pool`` is a one-line error."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import pytest
from helpers_envs import ScriptedStream
from typer.testing import CliRunner

from agentopd.cli import app
from agentopd.core.types import StopReason
from agentopd.envs.registry import make_env
from agentopd.inference.sampling import SamplingParams
from agentopd.rollout import env_pool
from agentopd.rollout.env_pool import ThreadEnvPool
from agentopd.rollout.oracle import OraclePolicy
from agentopd.rollout.runner import RolloutConfig, run_episodes
from agentopd.tools.core import format_tool_call

TESTS = Path(__file__).resolve().parents[1]
HANGING = functools.partial(make_env, "class:helpers_envs:HangingEnv")
"""Echo envs whose step on task echo-1 sleeps 900 s (the id form imports helpers_envs where the env lives)."""


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance for this module; its workers import the tests' helper envs."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(TESTS)}})
    yield ray
    ray.shutdown()


def _pool_kind(kind: str, request) -> str:
    if kind == "ray":
        request.getfixturevalue("local_ray")
    return kind


def _assert_same(a, b) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.token_ids == y.token_ids
        assert [t.text for t in x.turns] == [t.text for t in y.turns]
        assert [t.tool_results for t in x.turns] == [t.tool_results for t in y.turns]
        assert (x.reward, x.success, x.stop_reason) == (y.reward, y.success, y.stop_reason)
        assert x == y  # and everything else: messages, logprobs, oracle actions, checks


@pytest.mark.ray
@pytest.mark.parametrize("env_id", ["agentopd/Calc-v0", "agentopd/Python-v0"])
def test_ray_workers_play_the_same_episodes_as_threads(env_id, local_ray, tokenizer):
    make = functools.partial(make_env, env_id, split="train")
    tasks, seeds = [0, 3, 5, 8], [0, 1, 2, 3]
    local = run_episodes(make, OraclePolicy(), tasks, seeds, RolloutConfig(), env_id, tokenizer=tokenizer)
    remote = run_episodes(make, OraclePolicy(), tasks, seeds, RolloutConfig(env_pool="ray"), env_id,
                          tokenizer=tokenizer)
    assert all(e.success and e.stop_reason == StopReason.DONE for e in local)
    _assert_same(local, remote)


@pytest.mark.ray
def test_ray_workers_under_continuous_batching(local_ray, tokenizer):
    """The token path: each finished turn's step is a future on a Ray actor."""
    texts = [format_tool_call("calculator", {"expression": "2 + 3"}), "Answer: 5"]
    cfg = RolloutConfig(SamplingParams(max_new_tokens=64), max_context_tokens=4096)
    make = functools.partial(make_env, "agentopd/Calc-v0", split="train")
    runs = [run_episodes(make, ScriptedStream(tokenizer, texts), [0, 1, 2], [0, 1, 2],
                         RolloutConfig(cfg.sampling, cfg.max_context_tokens, env_pool=kind), "calc")
            for kind in ("threads", "ray")]
    assert all(e.num_turns >= 2 for e in runs[0])
    _assert_same(*runs)


@pytest.mark.parametrize("kind", ["threads", pytest.param("ray", marks=pytest.mark.ray)])
@pytest.mark.parametrize("continuous", [False, True], ids=["oracle-lockstep", "stream-continuous"])
def test_a_hung_step_ends_only_its_episode(kind, continuous, request, tokenizer):
    kind = _pool_kind(kind, request)
    # One worker: one thread (replaced when it hangs), or one Ray actor stepping all three envs.
    cfg = RolloutConfig(SamplingParams(max_new_tokens=64), env_workers=1, env_pool=kind, env_step_timeout_s=1.0)
    if continuous:
        policy = ScriptedStream(tokenizer, [format_tool_call("shout", {"text": "x"}), "Answer: X"])
    else:
        policy = OraclePolicy()
    t = time.monotonic()
    eps = run_episodes(HANGING, policy, ["echo-0", "echo-1", "echo-2"], [0, 1, 2], cfg, "echo",
                       tokenizer=tokenizer)
    took = time.monotonic() - t
    assert eps[1].stop_reason == StopReason.ERROR and "env step exceeded 1 s" in eps[1].error
    for e in (eps[0], eps[2]):  # the others finished their episodes
        assert e.stop_reason == StopReason.DONE and e.error is None
        assert e.success == (not continuous)
    assert took < 300, f"the batch waited on the hung step ({took:.0f} s; it sleeps 900)"


def test_thread_pool_close_does_not_wait_for_a_hung_step():
    pool = ThreadEnvPool(workers=1, step_timeout_s=0.3)
    hung, ok = pool.make(HANGING), pool.make(HANGING)
    hung.reset(0, {"task": "echo-1"})
    ok.reset(0, {"task": "echo-0"})
    assert "exceeded 0.3 s" in hung.submit("hi").result(timeout=5)
    assert not isinstance(ok.submit("hi").result(timeout=5), str)  # a fresh thread took the hung one's place
    assert "stuck" in hung.submit("again").result(timeout=1)
    t = time.monotonic()
    pool.close()
    assert time.monotonic() - t < 1


@pytest.mark.ray
def test_ray_pool_close_kills_a_hung_worker_and_parks_a_healthy_one(local_ray):
    from agentopd.rollout.ray_pool import RayEnvPool, stop_workers

    stop_workers()  # none parked by earlier tests
    pool = RayEnvPool(actors=2, threads=4, step_timeout_s=0.5)
    hung, ok = pool.make(HANGING), pool.make(HANGING)  # one on each actor
    hung.reset(0, {"task": "echo-1"})
    ok.reset(0, {"task": "echo-0"})
    assert "exceeded 0.5 s" in hung.submit("hi").result(timeout=30)
    assert not isinstance(ok.submit("hi").result(timeout=30), str)
    stuck, healthy = pool._actors
    t = time.monotonic()
    pool.close()
    assert time.monotonic() - t < 5
    _dies_within(local_ray, stuck, 30)  # killed, and the hung call with it
    again = RayEnvPool(actors=1, threads=4, step_timeout_s=0.5)  # the next pool starts no process
    assert again._actors[0]._actor_id == healthy._actor_id
    again.close()
    stop_workers()
    _dies_within(local_ray, healthy, 30)


def _dies_within(ray, actor, seconds: float) -> None:
    """ray.kill is asynchronous: a ping sent right after it can still be answered (CI saw it)."""
    deadline = time.monotonic() + seconds
    with pytest.raises(ray.exceptions.RayActorError):
        while time.monotonic() < deadline:
            ray.get(actor.ping.remote(), timeout=seconds)
            time.sleep(0.2)


runner = CliRunner()
TRAIN = ["train", "--steps", "1", "--episodes-per-step", "1", "--eval-every", "0"]
EVAL = ["eval", "--env", "agentopd/Calc-v0", "--model", "oracle"]


@pytest.mark.parametrize("args, phrase", [
    (["--env-pool", "processes"], "env_pool 'processes': use threads or ray"),
    (["--env-step-timeout", "-1"], "env_step_timeout must be >= 0"),
    (["--env-pool", "ray"], "needs Ray, which is not installed here: pip install 'ray>=2.40'"),  # Ray made to look missing
])
@pytest.mark.parametrize("cmd", [TRAIN, EVAL], ids=["train", "eval"])
def test_bad_env_pool_is_a_one_line_error(cmd, args, phrase, tmp_path, monkeypatch):
    monkeypatch.setattr(env_pool, "ray_installed", lambda: False)
    out = tmp_path / "run"
    result = runner.invoke(app, [*cmd, "--out", str(out), *args])
    text = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "error:" in text and phrase in text, text
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not out.exists()
