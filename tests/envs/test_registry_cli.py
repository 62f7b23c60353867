import json

import gymnasium as gym
import pytest
from typer.testing import CliRunner

import agentopd  # noqa: F401
from agentopd.cli import app
from agentopd.envs.checker import check_env
from agentopd.envs.registry import agentopd_env_ids, make_env

runner = CliRunner()


def test_families_are_registered_under_the_namespace():
    ids = agentopd_env_ids()
    for name in ("agentopd/Calc-v0", "agentopd/Files-v0", "agentopd/SQL-v0", "agentopd/Python-v0"):
        assert name in ids
    env = gym.make("agentopd/Calc-v0")
    obs, info = env.reset(seed=0)
    assert obs[0]["role"] == "system" and obs[1]["role"] == "user"


def test_third_party_env_registered_with_gymnasium_works_by_id():
    if "thirdparty/Echo-v0" not in gym.registry:
        gym.register(id="thirdparty/Echo-v0", entry_point="helpers_envs:EchoEnv", max_episode_steps=4)
    assert check_env("thirdparty/Echo-v0", splits=("train",)) == []
    result = runner.invoke(app, ["eval", "--env", "class:helpers_envs:EchoEnv", "--model", "oracle", "--split", "train"])
    assert result.exit_code == 0, result.output
    assert "success rate" in result.output and "1.000" in result.output


def test_unknown_env_has_a_clear_error():
    with pytest.raises(ValueError, match="unknown env"):
        make_env("agentopd/Nope-v0")
    with pytest.raises(ValueError, match="cannot import"):
        make_env("no_such_pkg.mod:Env")


def test_checker_catches_a_broken_oracle():
    from helpers_envs import EchoEnv

    class WrongOracle(EchoEnv):
        def oracle_action(self):
            return "Answer: nothing"

    gym.register(id="thirdparty/WrongOracle-v0", entry_point=WrongOracle, max_episode_steps=4)
    problems = check_env("thirdparty/WrongOracle-v0", splits=("train",))
    assert any("oracle failed" in p for p in problems)


@pytest.mark.parametrize("cmd", [[], ["eval"], ["envs"], ["check-env"]])
def test_help_on_every_command(cmd):
    result = runner.invoke(app, [*cmd, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_eval_oracle_writes_episodes(tmp_path):
    result = runner.invoke(app, ["eval", "--env", "agentopd/Calc-v0", "--model", "oracle", "--n", "12", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "episodes.jsonl").read_text().splitlines()
    assert len(lines) == 12
    assert all(json.loads(line)["success"] for line in lines)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["metrics"]["eval/success"] == 1.0
    assert summary["metrics"]["turn/0/on_track"] == 1.0


def test_eval_with_tiny_model_checkpoint(tmp_path, tiny_model, tokenizer):
    """`agentopd eval --model hf:<dir>` on a saved (tiny) model: any hf model with a chat template."""
    tiny_model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    result = runner.invoke(app, ["eval", "--env", "agentopd/Calc-v0", "--model", f"hf:{tmp_path / 'm'}",
                                 "--n", "3", "--max-new-tokens", "8", "--out", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (tmp_path / "ev" / "episodes.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["token_ids"] and sum(r["loss_mask"]) > 0 for r in rows)
