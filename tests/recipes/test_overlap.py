"""Overlapped rollouts: the next step's episodes sample on the sampler's own copy while the
learner steps; one step stale, measured, and never a half-synced sampler."""

from __future__ import annotations

import json

import pytest
import torch

from agentopd.inference.hf import HFPolicy
from agentopd.recipes import TrainConfig
from agentopd.recipes import train as main


def test_detached_policy_owns_its_weights_and_syncs_by_name(tiny_model, tokenizer):
    learner_model = tiny_model
    policy = HFPolicy(learner_model, tokenizer).detached()
    assert policy.owns_weights and policy.model is not learner_model
    with torch.no_grad():
        for p in learner_model.parameters():
            p.add_(0.01)
    try:
        before = next(policy.model.parameters())
        assert not torch.equal(before, next(learner_model.parameters()))  # stepping the learner left it alone
        policy.load_weights(learner_model.named_parameters())
        for (n, a), b in zip(policy.model.named_parameters(), learner_model.parameters()):
            assert torch.equal(a, b), n
        with pytest.raises(RuntimeError, match="no tensor arrived"):
            policy.load_weights(list(learner_model.named_parameters())[1:])
        with pytest.raises(RuntimeError, match="detached"):
            HFPolicy(learner_model, tokenizer).load_weights(learner_model.named_parameters())
    finally:
        with torch.no_grad():
            for p in learner_model.parameters():
                p.sub_(0.01)


def test_overlapped_opd_trains_on_one_step_stale_episodes(tiny_dir, tmp_path):
    cfg = TrainConfig(student=f"hf:{tiny_dir}", teacher="self", loss="reverse_kl_pg", steps=3, episodes_per_step=2,
                      out=str(tmp_path / "run"), max_new_tokens=8, eval_every=0, ckpt_every=3, lr=1e-3,
                      warm_start_steps=0, overlap_rollouts=True)
    main(cfg)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["rollout/staleness"] for r in rows] == [0.0, 1.0, 1.0]
    assert all("time/sync_s" in r and "rollout/importance_ratio_std" in r for r in rows)
    # on-policy at step 1: the sampler's logprobs are the learner's; later the update shows
    assert rows[0]["rollout/sampler_learner_logp_diff_max"] < 1e-3
    assert rows[2]["rollout/sampler_learner_logp_diff_max"] > rows[0]["rollout/sampler_learner_logp_diff_max"]


def test_overlap_is_refused_for_recipes_that_cannot_use_it(tiny_dir, tmp_path):
    cfg = TrainConfig(student=f"hf:{tiny_dir}", teacher="oracle", loss="dagger", steps=1, out=str(tmp_path / "r"),
                      overlap_rollouts=True)
    with pytest.raises(ValueError, match="overlap_rollouts .* reverse_kl_pg"):
        cfg.validate()
    vllm = TrainConfig(student="vllm:smollm2-135m", teacher="self", loss="reverse_kl_pg", out=str(tmp_path / "v"),
                       overlap_rollouts=True)
    with pytest.raises(ValueError, match="vllm: student is not supported"):
        vllm.validate()
