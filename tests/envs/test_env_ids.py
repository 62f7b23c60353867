"""Gymnasium's conventions for env ids and capabilities: module:EnvId, the entry-point group,
capabilities read through wrappers, Gymnasium's own checker first in check-env."""

import sys
import textwrap

import gymnasium as gym
import pytest
from helpers_envs import EchoEnv, ScriptedPolicy
from typer.testing import CliRunner

from agentopd.cli import app
from agentopd.envs import registry
from agentopd.envs.checker import check_env
from agentopd.envs.registry import env_attr, make_env
from agentopd.inference.sampling import SamplingParams
from agentopd.rollout.oracle import OraclePolicy
from agentopd.rollout.runner import RolloutConfig, run_episodes


def _write_module(root, name, body):
    (root / f"{name}.py").write_text(textwrap.dedent(body))


def test_module_colon_env_id_imports_the_module_that_registers_it(tmp_path, monkeypatch):
    _write_module(tmp_path, "colon_envs", """
        import gymnasium as gym
        gym.register(id="colon/Echo-v0", entry_point="helpers_envs:EchoEnv", max_episode_steps=4)
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "colon/Echo-v0" not in gym.registry
    env = make_env("colon_envs:colon/Echo-v0")
    assert env.spec.id == "colon/Echo-v0" and isinstance(env.unwrapped, EchoEnv)
    with pytest.raises(ValueError, match="did not register"):
        make_env("colon_envs:colon/Nope-v0")
    with pytest.raises(ValueError, match="class:pkg.module:Class"):
        make_env("helpers_envs:EchoEnv")  # a class is not an id: the class form is spelled differently
    assert isinstance(make_env("class:helpers_envs:EchoEnv").unwrapped, EchoEnv)


def test_an_installed_package_registers_envs_through_the_entry_point_group(tmp_path, monkeypatch):
    _write_module(tmp_path, "plugged_envs", """
        import gymnasium as gym

        def register():
            gym.register(id="plugged/Echo-v0", entry_point="helpers_envs:EchoEnv", max_episode_steps=4)
    """)
    dist = tmp_path / "plugged-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plugged\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[agentopd.envs]\nplugged = plugged_envs:register\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    assert "plugged/Echo-v0" not in gym.registry
    env = make_env("plugged/Echo-v0")  # no import by the user: found by id
    assert isinstance(env.unwrapped, EchoEnv)
    result = CliRunner().invoke(app, ["eval", "--env", "plugged/Echo-v0", "--model", "oracle", "--split", "train"])
    assert result.exit_code == 0 and "1.000" in result.output, result.output
    assert "plugged_envs" in sys.modules


class ShortcutOracle(gym.Wrapper):
    """A wrapper that overrides the env's expert: answer at once, without the tool."""

    def oracle_action(self) -> str:
        return f"Answer: {self.env.unwrapped.task.data['word'].upper()}"


def test_a_wrapper_overrides_the_oracle_for_every_consumer(tokenizer):
    if "thirdparty/ShortcutEcho-v0" not in gym.registry:
        gym.register(id="thirdparty/ShortcutEcho-v0", entry_point=lambda **kw: ShortcutOracle(EchoEnv(**kw)),
                     max_episode_steps=4)
    env = make_env("thirdparty/ShortcutEcho-v0")
    env.reset(seed=0, options={"task": "echo-0"})
    assert env_attr(env, "oracle_action")() == "Answer: HELLO"
    # the oracle as a policy plays the wrapper's expert: one turn, solved
    (ep,) = run_episodes(lambda: make_env("thirdparty/ShortcutEcho-v0"), OraclePolicy(), ["echo-0"], [0],
                         tokenizer=tokenizer)
    assert ep.success and ep.num_turns == 1
    # DAgger's targets (recorded per turn) are the wrapper's expert too, not the env's own
    pol = ScriptedPolicy(tokenizer, ["I do not know."])
    (ep,) = run_episodes(lambda: make_env("thirdparty/ShortcutEcho-v0"), pol, ["echo-0"], [0],
                         RolloutConfig(SamplingParams(max_new_tokens=32)))
    assert [t.oracle_action for t in ep.turns] == ["Answer: HELLO"]
    assert check_env("thirdparty/ShortcutEcho-v0", splits=("train",)) == []


class NoSeedEnv(EchoEnv):
    """Breaks Gymnasium's reset signature (no seed)."""

    def reset(self, *, options=None):  # type: ignore[override]
        return super().reset(options=options)


def test_check_env_runs_gymnasiums_checker_first():
    if "thirdparty/NoSeed-v0" not in gym.registry:
        gym.register(id="thirdparty/NoSeed-v0", entry_point=NoSeedEnv, max_episode_steps=4)
    problems = check_env("thirdparty/NoSeed-v0", splits=("train",))
    assert problems and problems[0].startswith("gymnasium's env checker"), problems
