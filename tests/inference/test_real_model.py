"""The real embedded SmolLM2-135M-Instruct through an env, end to end (slow)."""

import math

import pytest
import torch

from agentopd.envs.registry import make_env
from agentopd.inference.hf import HFPolicy
from agentopd.inference.sampling import SamplingParams
from agentopd.rollout.runner import RolloutConfig, run_episodes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def policy():
    return HFPolicy.from_spec("smollm2-135m", max_batch=8)


def test_real_model_rollout_end_to_end(policy):
    cfg = RolloutConfig(SamplingParams(max_new_tokens=40, temperature=1.0, seed=0), max_context_tokens=2048)
    eps = run_episodes(lambda: make_env("agentopd/Calc-v0", split="test"), policy, [0, 1, 2, 3], [0, 1, 2, 3], cfg)
    for ep in eps:
        assert ep.num_turns >= 1 and sum(ep.loss_mask) > 0
        assert all(math.isfinite(x) and x <= 0 for x in ep.logprobs)
        # token-in/token-out: each turn's span decodes to the text the env received
        for t in ep.turns:
            ids = list(ep.token_ids[t.start : t.end])
            if ids[-1] == policy.tokenizer.eos_token_id:
                ids = ids[:-1]
            assert policy.tokenizer.decode(ids) == t.text
            assert ep.messages[[i for i, m in enumerate(ep.messages) if m["role"] == "assistant"][t.index]]["content"] == t.text
    # the recorded sampling logprobs are the model's own (teacher-forced recompute)
    ep = eps[0]
    t = ep.turns[0]
    with torch.no_grad():
        logp = torch.log_softmax(policy.model(torch.tensor([ep.token_ids[: t.end]])).logits[0].float(), -1)
    ref = [logp[i - 1, ep.token_ids[i]].item() for i in range(t.start, t.end)]
    assert list(ep.logprobs[t.start : t.end]) == pytest.approx(ref, abs=2e-3)
