import pytest
import torch

from agentopd.inference.hf import HFPolicy
from agentopd.inference.sampling import (
    SamplingParams,
    draw,
    processed_logprobs,
    sample_tokens,
    uniforms,
)


def test_sample_tokens_greedy_and_logprob_definition():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, -1.0]])
    tok, lp = sample_tokens(logits, SamplingParams(temperature=0), None)
    assert tok.tolist() == [1, 0]
    assert torch.allclose(lp, torch.log_softmax(logits, -1).gather(-1, tok[:, None]).squeeze(-1))
    g = torch.Generator().manual_seed(0)
    tok, lp = sample_tokens(logits, SamplingParams(temperature=0.5), g)
    assert torch.allclose(lp, torch.log_softmax(logits / 0.5, -1).gather(-1, tok[:, None]).squeeze(-1))


def test_top_k_one_is_greedy_and_top_p_renormalises():
    logits = torch.randn(4, 50)
    g = torch.Generator().manual_seed(1)
    tok, lp = sample_tokens(logits, SamplingParams(temperature=1.0, top_k=1), g)
    assert tok.tolist() == logits.argmax(-1).tolist()
    assert torch.allclose(lp, torch.zeros(4))  # all mass on one token
    logits = torch.tensor([[5.0, 4.9, -10.0, -10.0]])
    for _ in range(20):
        tok, lp = sample_tokens(logits, SamplingParams(temperature=1.0, top_p=0.9), g)
        assert tok.item() in (0, 1)
        p = torch.softmax(logits[0, :2], -1)
        assert lp.item() == pytest.approx(torch.log(p[tok.item()]).item(), abs=1e-5)


def _flat_inverse_cdf(logp, u):
    """The naive reference: one float64 cumsum over the whole vocabulary."""
    cdf = logp.exp().double().cumsum(-1)
    return torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(-1)


@pytest.mark.parametrize("V", [7, 256, 1000, 49152])
def test_two_level_draw_is_the_flat_inverse_cdf(V):
    """`draw` (block sums, then one block's cumsum) picks the token a flat float64 inverse CDF
    picks, for every row, with masked (top-k) distributions and a vocabulary that is not a
    multiple of the block, and never a token the distribution excludes."""
    g = torch.Generator().manual_seed(V)
    logits = torch.randn(64, V, generator=g) * 3
    for params in (SamplingParams(temperature=1.0), SamplingParams(temperature=0.7, top_k=5),
                   SamplingParams(temperature=1.0, top_p=0.5)):
        logp = processed_logprobs(logits, params)
        for step in range(5):
            u = uniforms(step, list(range(64)), [step] * 64)
            tok = draw(logp, u)
            assert tok.tolist() == _flat_inverse_cdf(logp, u).tolist()
            assert torch.isfinite(logp.gather(-1, tok[:, None])).all()
    edge = torch.log_softmax(torch.tensor([[0.0] * 3 + [float("-inf")] * 300]), -1)
    assert draw(edge, torch.tensor([1 - 2.0**-53])).item() == 2  # the top of the cdf: the last kept token


def _prompts(tokenizer):
    texts = ["Hi", "Tell me about tools and agents in detail please", "2 + 2 ="]
    return [tokenizer.encode(t) for t in texts]


def test_recorded_logprobs_match_a_teacher_forced_forward(tiny_policy, tokenizer):
    """Left padding, KV caching and rows dropping out must not change the logprobs."""
    prompts = _prompts(tokenizer)
    samples = tiny_policy.sample(prompts, SamplingParams(max_new_tokens=10, temperature=1.0, seed=3))
    for p, s in zip(prompts, samples):
        ids = torch.tensor([list(p) + list(s.token_ids)])
        with torch.no_grad():
            logp = torch.log_softmax(tiny_policy.model(ids).logits[0].float(), -1)
        ref = [logp[len(p) - 1 + i, t].item() for i, t in enumerate(s.token_ids)]
        assert s.logprobs == pytest.approx(ref, abs=1e-4)


def test_greedy_batched_equals_one_at_a_time(tiny_policy, tokenizer):
    prompts = _prompts(tokenizer)
    params = SamplingParams(max_new_tokens=8, temperature=0)
    batched = tiny_policy.sample(prompts, params)
    single = [tiny_policy.sample([p], params)[0] for p in prompts]
    assert [s.token_ids for s in batched] == [s.token_ids for s in single]


def test_same_seed_same_samples_and_stop_tokens_end_rows(tiny_model, tokenizer):
    prompts = _prompts(tokenizer)
    pol = HFPolicy(tiny_model, tokenizer)
    params = SamplingParams(max_new_tokens=12, temperature=1.0, seed=11)
    a, b = pol.sample(prompts, params), pol.sample(prompts, params)
    assert [s.token_ids for s in a] == [s.token_ids for s in b]
    assert all(s.finish_reason == "length" and len(s.token_ids) == 12 for s in a if tokenizer.eos_token_id not in s.token_ids)
    greedy = pol.sample(prompts, SamplingParams(max_new_tokens=12, temperature=0))
    stop = greedy[1].token_ids[4]
    pol_stop = HFPolicy(tiny_model, tokenizer, stop_token_ids=[stop])
    cut = pol_stop.sample(prompts, SamplingParams(max_new_tokens=12, temperature=0))
    for full, s in zip(greedy, cut):
        k = full.token_ids.index(stop) + 1 if stop in full.token_ids else len(full.token_ids)
        assert s.token_ids == full.token_ids[:k]
        assert s.finish_reason == ("stop" if stop in full.token_ids else "length")
    assert cut[1].finish_reason == "stop" and len(cut[1].token_ids) <= 5
