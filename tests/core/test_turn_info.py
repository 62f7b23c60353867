"""TurnInfo: the typed env -> rollout contract."""

import pytest
from helpers_envs import EchoEnv, ScriptedPolicy

from agentopd.core import EnvContractError, StopReason, ToolCall, ToolResult, TurnInfo
from agentopd.inference.sampling import SamplingParams
from agentopd.rollout.runner import RolloutConfig, run_episodes
from agentopd.tools.core import format_tool_call


def test_round_trip_through_a_gymnasium_info_dict():
    info = TurnInfo(turn=2, request_index=1, tool_calls=(ToolCall("calc", {"x": 1}),),
                    tool_results=(ToolResult("calc", "boom", error="exception"),), oracle_action="Answer: 3",
                    oracle_ok=False, request_success=(True,))
    flat = info.to_info()
    assert flat["oracle_ok"] is False and flat["tool_errors"] == 1 and isinstance(flat["tool_calls"], list)
    assert TurnInfo.from_info(flat) == info
    done = TurnInfo(3, 1, (), (), "Answer: 3", True, (True, True), StopReason.DONE, True)
    assert TurnInfo.from_info(done.to_info(), terminated=True) == done


def test_a_missing_key_is_an_error_that_names_it():
    flat = TurnInfo(0, 0, (), (), None, None, ()).to_info()
    del flat["oracle_ok"]
    with pytest.raises(EnvContractError, match="oracle_ok"):
        TurnInfo.from_info(flat)
    ok = TurnInfo(0, 0, (), (), None, True, (True,)).to_info()
    with pytest.raises(EnvContractError, match="success"):  # a terminating step must say whether it succeeded
        TurnInfo.from_info(ok, terminated=True)


class ForgetfulEnv(EchoEnv):
    """An adapter that drops a key: once this silently became success=False."""

    def step(self, action):
        obs, r, term, trunc, info = super().step(action)
        info.pop("success", None)
        return obs, r, term, trunc, info


def test_the_runner_refuses_an_env_that_breaks_the_contract(tokenizer):
    pol = ScriptedPolicy(tokenizer, [format_tool_call("shout", {"text": "hello"}), "Answer: HELLO"])
    (ep,) = run_episodes(lambda: EchoEnv(), pol, ["echo-0"], [0], RolloutConfig(SamplingParams(max_new_tokens=64)))
    assert ep.success and ep.turns[0].oracle_action == format_tool_call("shout", {"text": "hello"})
    pol = ScriptedPolicy(tokenizer, [format_tool_call("shout", {"text": "hello"}), "Answer: HELLO"])
    with pytest.raises(EnvContractError, match="success"):
        run_episodes(lambda: ForgetfulEnv(), pol, ["echo-0"], [0], RolloutConfig(SamplingParams(max_new_tokens=64)))
