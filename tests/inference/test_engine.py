"""The decode engine and the continuous batch against the reference path (one row, no cache,
transformers' forward, the same keyed draws): same ids, same logprobs, per dtype."""

import copy

import pytest
import torch

from agentopd.inference.dtypes import cpu_bf16_units, resolve_dtype
from agentopd.inference.engine import DecodeEngine, unsupported
from agentopd.inference.hf import HFPolicy, reference_samples
from agentopd.inference.sampling import SamplingParams


def _prompts(tokenizer):
    texts = ["Hi", "Tell me about tools and agents in detail please, one by one", "2 + 2 =",
             "A much longer prompt " * 6, "x"]
    return [tokenizer.encode(t) for t in texts]


def _family_model(tokenizer, kind: str):
    """Tiny Qwen2 (q/k/v biases) and Qwen3 (q/k norms) models: the engine's other branches."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(1)
    common = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                  tie_word_embeddings=False)
    if kind == "qwen2":
        m = Qwen2ForCausalLM(Qwen2Config(**common))
        with torch.no_grad():  # non-zero biases, so a dropped bias would show
            for layer in m.model.layers:
                for p in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    p.bias.normal_(0, 0.5)
        return m.eval()
    return Qwen3ForCausalLM(Qwen3Config(head_dim=16, **common)).eval()


def _assert_same(got, ref, atol=1e-4):
    for g, r in zip(got, ref, strict=True):
        assert g.token_ids == r.token_ids
        assert g.finish_reason == r.finish_reason
        assert g.logprobs == pytest.approx(r.logprobs, abs=atol)


@pytest.mark.parametrize("params", [SamplingParams(max_new_tokens=12, temperature=1.0, seed=3),
                                    SamplingParams(max_new_tokens=12, temperature=0),
                                    SamplingParams(max_new_tokens=12, temperature=0.8, top_p=0.9, top_k=40, seed=5)])
@pytest.mark.parametrize("engine", ["engine", "hf"])
def test_fast_paths_match_the_reference(tiny_model, tokenizer, params, engine):
    prompts = _prompts(tokenizer)
    ref = reference_samples(tiny_model, prompts, params, stop_token_ids=[tokenizer.eos_token_id])
    _assert_same(HFPolicy(tiny_model, tokenizer, engine=engine).sample(prompts, params), ref)


@pytest.mark.parametrize("kind", ["qwen2", "qwen3"])
def test_engine_runs_other_families_exactly(tokenizer, kind):
    model = _family_model(tokenizer, kind)
    assert unsupported(model) is None
    prompts = _prompts(tokenizer)
    params = SamplingParams(max_new_tokens=10, temperature=1.0, seed=7)
    ref = reference_samples(model, prompts, params, stop_token_ids=[tokenizer.eos_token_id])
    _assert_same(HFPolicy(model, tokenizer, engine="engine").sample(prompts, params), ref)
    # bf16 compute over fp32 weights: the fused q/k/v (with Qwen2's biases) and gate/up copies
    ref = reference_samples(_bf16_ref(model), prompts, params, stop_token_ids=[tokenizer.eos_token_id])
    _assert_close(HFPolicy(model, tokenizer, engine="engine", dtype=torch.bfloat16).sample(prompts, params),
                  ref, torch.bfloat16)


@pytest.mark.parametrize("packed", [True, False])
def test_packed_and_plain_linears_sample_as_the_reference(tiny_model, tokenizer, packed, monkeypatch):
    """oneDNN-packed weights (the CPU default) and plain `linear` (elsewhere), fp32 and bf16."""
    import agentopd.inference.engine as eng

    if packed and not eng.can_pack(torch.device("cpu")):
        pytest.skip("this torch build has no oneDNN")
    monkeypatch.setattr(eng, "can_pack", lambda device: packed)
    prompts = _prompts(tokenizer)
    params = SamplingParams(max_new_tokens=10, temperature=1.0, seed=9)
    pol = HFPolicy(tiny_model, tokenizer, engine="engine")
    _assert_same(pol.sample(prompts, params), reference_samples(tiny_model, prompts, params,
                                                                stop_token_ids=[tokenizer.eos_token_id]))
    assert pol._engine is not None and pol._engine.packed is packed
    ref = reference_samples(_bf16_ref(tiny_model), prompts, params, stop_token_ids=[tokenizer.eos_token_id])
    _assert_close(HFPolicy(tiny_model, tokenizer, engine="engine", dtype=torch.bfloat16).sample(prompts, params),
                  ref, torch.bfloat16)


def test_removing_rows_keeps_every_survivor_exact(tiny_model):
    """Rows of different lengths leave mid-decode (the first, a middle one, the last): each
    survivor goes on from its own keys and values, wherever its slot moved, as in an engine that
    only ever held it."""
    lengths = [9, 23, 4, 17, 30, 12]
    prompts = [[50 + 3 * r + j for j in range(n)] for r, n in enumerate(lengths)]
    eng = DecodeEngine(tiny_model)
    eng.prefill([(p, 0, None, False) for p in prompts])
    feed = [[7 + r, 11 + r, 13 + r, 17 + r] for r in range(len(prompts))]
    eng.decode([f[0] for f in feed])
    order = eng.remove([0, 2, 5])
    assert sorted(order) == [1, 3, 4] and eng.n_live == 3
    assert eng.lens == [lengths[i] + 1 for i in order]
    got = [eng.decode([feed[i][t] for i in order]) for t in (1, 2, 3)]
    left = [order[j] for j in eng.remove([order.index(4)])]  # the returned order indexes the previous one
    assert sorted(left) == [1, 3]
    last = eng.decode([feed[i][3] + 1 for i in left])
    for j, i in enumerate(order):
        alone = DecodeEngine(tiny_model)
        alone.prefill([(prompts[i], 0, None, False)])
        want = [alone.decode([feed[i][t]]) for t in range(4)]
        for t in range(3):
            torch.testing.assert_close(got[t][j : j + 1], want[t + 1], rtol=0, atol=1e-4)
        if i in left:
            torch.testing.assert_close(last[left.index(i)][None], alone.decode([feed[i][3] + 1]), rtol=0, atol=1e-4)


def test_rows_joining_a_running_batch(tiny_model, tokenizer):
    """Rows submitted while others decode, batches of 10 rows down to 1, keys out of order."""
    prompts = _prompts(tokenizer) * 3  # 15 rows: full batches, then draining to one
    keys = [100 + 7 * i for i in range(len(prompts))]
    params = SamplingParams(max_new_tokens=9, temperature=1.0, seed=11)
    ref = reference_samples(tiny_model, prompts, params, keys=keys, stop_token_ids=[tokenizer.eos_token_id])
    pol = HFPolicy(tiny_model, tokenizer, max_batch=10)
    got = {}
    with pol.open(params) as gen:
        for p, k in zip(prompts[:4], keys[:4]):
            gen.submit(p, k)
        for _ in range(3):
            got.update(gen.step())
        for p, k in zip(prompts[4:], keys[4:]):  # join mid-flight; some wait for a free slot
            gen.submit(p, k)
        while gen.busy:
            got.update(gen.step())
            assert gen.live <= 10
    _assert_same([got[k] for k in keys], ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_at_one_column_decode_unmasked_as_the_reference(tiny_model, tokenizer, dtype, monkeypatch):
    """Batch 1, and rows whose prompts have one length, decode without a mask and write their
    keys by slice: the same draws as the reference."""
    import agentopd.inference.engine as engine_mod

    masks = []
    sdpa = engine_mod.F.scaled_dot_product_attention

    def spy(*a, **kw):
        if "enable_gqa" not in kw:  # a decode step (prefills pass enable_gqa)
            masks.append(kw.get("attn_mask"))
        return sdpa(*a, **kw)

    monkeypatch.setattr(engine_mod.F, "scaled_dot_product_attention", spy)
    model = copy.deepcopy(tiny_model).to(dtype)
    ref_model = _bf16_ref(model) if dtype == torch.bfloat16 else model
    params = SamplingParams(max_new_tokens=10, temperature=1.0, seed=4)
    for prompts in ([tokenizer.encode("2 + 2 =")], [list(range(100 + 20 * i, 109 + 20 * i)) for i in range(3)]):
        ref = reference_samples(ref_model, prompts, params, stop_token_ids=[])
        pol = HFPolicy(model, tokenizer, engine="engine")
        pol.stop_token_ids = []
        _assert_close(pol.sample(prompts, params), ref, dtype)
    assert masks and all(m is None for m in masks)


@pytest.mark.parametrize("weights", [torch.float32, torch.bfloat16])
def test_one_row_bf16_decode_through_aten_gemv(tiny_model, tokenizer, weights, monkeypatch):
    """One-row bf16 decode steps run the linears over (out, in) copies with oneDNN off (forced on
    here, whatever the CPU): the reference's draws, oneDNN switched back on after every step, and
    the packed path kept off the main thread (oneDNN's switch is process-wide)."""
    import threading

    import agentopd.inference.engine as engine_mod

    if not engine_mod.can_pack(torch.device("cpu")):
        pytest.skip("this torch build has no oneDNN")
    monkeypatch.setattr(engine_mod, "one_row_gemv", lambda device, dtype: dtype == torch.bfloat16)
    one_row = []
    linear = engine_mod.F.linear

    def spy(x, w, b=None):
        one_row.append((x.shape[0], torch._C._get_mkldnn_enabled()))
        return linear(x, w, b)

    monkeypatch.setattr(engine_mod.F, "linear", spy)
    model = copy.deepcopy(tiny_model).to(weights)
    params = SamplingParams(max_new_tokens=10, temperature=1.0, seed=6)
    prompts = [tokenizer.encode("2 + 2 =")]
    pol = HFPolicy(model, tokenizer, engine="engine", dtype=torch.bfloat16)
    pol.stop_token_ids = []
    got = pol.sample(prompts, params)
    assert pol._engine is not None and pol._engine.gemv
    assert torch._C._get_mkldnn_enabled()
    # every decode step's linears (and only theirs: prefill is packed) went through the copies
    n_lin = 1 + 4 * tiny_model.config.num_hidden_layers  # lm head + fused qkv, o, fused gate/up, down
    assert one_row == [(1, False)] * (n_lin * (params.max_new_tokens - 1))
    ref = reference_samples(_bf16_ref(model), prompts, params, stop_token_ids=[])
    _assert_close(got, ref, torch.bfloat16)
    one_row.clear()
    out = []
    t = threading.Thread(target=lambda: out.append(pol.sample(prompts, params)))
    t.start()
    t.join()
    assert one_row == [] and out[0][0].token_ids == got[0].token_ids


def test_prefix_cache_hits_sample_as_the_reference(tiny_model, tokenizer):
    """A second turn extends the first (stored KV reused), and a shared prefix is computed once."""
    head = tokenizer.encode("System: you are a careful agent with tools. " * 3)
    prompts = [head + tokenizer.encode(t) for t in ("one", "two two", "three three three")]
    params = SamplingParams(max_new_tokens=6, temperature=1.0, seed=2)
    pol = HFPolicy(tiny_model, tokenizer)
    first = pol.sample(prompts, params)
    assert pol.prefix_cache.entries  # the shared head and each row's turn are stored
    second = [p + list(s.token_ids) + tokenizer.encode(" next") for p, s in zip(prompts, first)]
    hits = pol.prefix_cache.hits
    got = pol.sample(second, params, keys=[5, 6, 7])
    assert pol.prefix_cache.hits > hits
    ref = reference_samples(tiny_model, second, params, keys=[5, 6, 7], stop_token_ids=[tokenizer.eos_token_id])
    _assert_same(got, ref)


def test_engine_follows_weight_updates(tokenizer):
    """An in-place update (what an optimizer step does) reaches the engine and drops stale KV."""
    from helpers_models import tiny_model_from

    model = tiny_model_from(tokenizer, seed=4)
    pol = HFPolicy(model, tokenizer)
    prompts = _prompts(tokenizer)[:3]
    params = SamplingParams(max_new_tokens=8, temperature=1.0, seed=1)
    pol.sample(prompts, params)
    pol.sample([list(prompts[0]) + [5]], params)  # a one-row decode over the same copies
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ref = reference_samples(model, prompts, params, stop_token_ids=[tokenizer.eos_token_id])
    _assert_same(pol.sample(prompts, params), ref)
    _assert_same(pol.sample(prompts[:1], params), ref[:1])


def _bf16_ref(model):
    return copy.deepcopy(model).to(torch.bfloat16)


def test_bf16_engine_matches_the_bf16_reference(tiny_model, tokenizer):
    prompts = _prompts(tokenizer)
    params = SamplingParams(max_new_tokens=8, temperature=1.0, seed=3)
    ref = reference_samples(_bf16_ref(tiny_model), prompts, params, stop_token_ids=[tokenizer.eos_token_id])
    got = HFPolicy(tiny_model, tokenizer, dtype=torch.bfloat16).sample(prompts, params)
    # bf16 rounds differently with a different matmul order: ids agree, logprobs to bf16 precision
    agree = sum(g.token_ids == r.token_ids for g, r in zip(got, ref))
    assert agree >= len(prompts) - 1
    for g, r in zip(got, ref):
        if g.token_ids == r.token_ids:
            assert g.logprobs == pytest.approx(r.logprobs, abs=0.05)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_recorded_logprob_is_the_distribution_drawn_from(tiny_model, tokenizer, dtype):
    """Empirical frequencies of 3,000 first tokens match exp(recorded logprob), per dtype."""
    prompt = tokenizer.encode("The answer is")
    n = 3000
    params = SamplingParams(max_new_tokens=1, temperature=1.0, top_k=4, seed=9)
    pol = HFPolicy(tiny_model, tokenizer, max_batch=1024, dtype=dtype, prefix_cache=False)
    out = pol.sample([prompt] * n, params, keys=range(n))
    probs: dict[int, float] = {}
    counts: dict[int, int] = {}
    for s in out:
        t = s.token_ids[0]
        counts[t] = counts.get(t, 0) + 1
        p = float(torch.tensor(s.logprobs[0]).exp())
        assert probs.setdefault(t, p) == pytest.approx(p, abs=1e-6)  # one distribution for every row
    assert len(counts) <= 4 and sum(probs.values()) == pytest.approx(1.0, abs=1e-3)
    for t, c in counts.items():
        sd = (probs[t] * (1 - probs[t]) / n) ** 0.5
        assert abs(c / n - probs[t]) < 4.5 * sd + 1e-3


def test_dtype_choice_and_engine_refusals(tokenizer):
    assert resolve_dtype("float32") == torch.float32 and resolve_dtype("bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="use auto, float32 or bfloat16"):
        resolve_dtype("fp8")
    if not cpu_bf16_units():  # no native bf16 units: bf16 is never chosen automatically
        assert resolve_dtype("auto", "cpu") == torch.float32
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("AGENTOPD_AUTO_DTYPE", "bfloat16")
        assert resolve_dtype("auto", "cpu") == torch.bfloat16 and resolve_dtype("float32") == torch.float32
        mp.setenv("AGENTOPD_AUTO_DTYPE", "fp16")
        with pytest.raises(ValueError, match="AGENTOPD_AUTO_DTYPE='fp16'"):
            resolve_dtype("auto", "cpu")
        mp.delenv("AGENTOPD_AUTO_DTYPE")
        assert resolve_dtype("auto", "cpu") in (torch.float32, torch.bfloat16)
    finally:
        mp.undo()
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2)).eval()
    assert "model type 'gpt2'" in unsupported(gpt2)
    with pytest.raises(ValueError, match="decode engine cannot run"):
        DecodeEngine(gpt2)
    with pytest.raises(ValueError, match="decode engine cannot run"):
        HFPolicy(gpt2, tokenizer, engine="engine")
    pol = HFPolicy(gpt2, tokenizer)  # auto falls back to transformers' forward
    assert pol.engine_name == "hf"
    params = SamplingParams(max_new_tokens=5, temperature=1.0, seed=1)
    prompts = _prompts(tokenizer)[:3]
    _assert_same(pol.sample(prompts, params),
                 reference_samples(gpt2, prompts, params, stop_token_ids=[tokenizer.eos_token_id]))


def test_one_open_generation_per_policy(tiny_model, tokenizer):
    pol = HFPolicy(tiny_model, tokenizer)
    params = SamplingParams(max_new_tokens=4, temperature=1.0)
    with pol.open(params) as gen:
        gen.submit(tokenizer.encode("Hi there"), 0)
        gen.step()
        with pytest.raises(RuntimeError, match="already has an open generation"):
            pol.open(params)
    with pol.open(params) as gen:  # closed: the slots are free again
        gen.submit(tokenizer.encode("Hi there"), 0)
        while gen.busy:
            gen.step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cascade_attention_over_a_shared_prefix(tiny_model, tokenizer, dtype):
    """Rows that share a system prompt read it once (cascade attention, merged by log-sum-exp):
    wide and narrow batches, rows without the prefix joining mid-flight, and a second turn
    whose cached history covers the prefix all sample as the reference does."""
    head = tokenizer.encode("System: you are a careful agent; call tools as JSON. " * 3)
    prompts = [head + tokenizer.encode(f"task {i}: " + "word " * i) for i in range(12)]
    strangers = [tokenizer.encode("Unrelated prompt number one"), tokenizer.encode("Another one " * 4)]
    params = SamplingParams(max_new_tokens=7, temperature=1.0, seed=4)
    model = tiny_model if dtype == torch.float32 else _bf16_ref(tiny_model)
    keys = list(range(14))
    ref = reference_samples(model, prompts + strangers, params, keys=keys, stop_token_ids=[tokenizer.eos_token_id])
    pol = HFPolicy(model, tokenizer, max_batch=12)
    got, seen = {}, []
    with pol.open(params) as gen:
        for k, p in enumerate(prompts):
            gen.submit(p, k)
        got.update(gen.step())
        for k, p in enumerate(strangers, start=12):  # join mid-flight without the prefix
            gen.submit(p, k)
        while gen.busy:
            got.update(gen.step())
            seen.append((gen.engine.shared_len, sum(o > 0 for o in gen.engine.off), gen.live))
    assert seen[0][0] >= len(head) and seen[0][1] == 12  # every admitted row reads it
    assert any(live < 8 for _, _, live in seen)  # a draining batch ran too
    _assert_close([got[k] for k in keys], ref, dtype)
    second = [p + list(got[k].token_ids) + tokenizer.encode(" ok") for k, p in enumerate(prompts[:9])]
    with pol.open(params) as gen:
        for k, p in enumerate(second):
            gen.submit(p, 50 + k)
        out = dict(gen.step())
        assert gen.engine.shared_len >= len(head) and all(gen.engine.off)
        while gen.busy:
            out.update(gen.step())
    ref2 = reference_samples(model, second, params, keys=range(50, 59), stop_token_ids=[tokenizer.eos_token_id])
    _assert_close([out[50 + k] for k in range(9)], ref2, dtype)


def _assert_close(got, ref, dtype):
    """fp32: the reference's ids and logprobs. bf16 rounds in another order (a cascade: each
    part, then the merge; fused copies; bf16 compute over fp32 weights), and a near-uniform tiny
    model then flips a draw now and then, after which a row's tokens differ: at least 60% of all
    tokens lie before each row's first flip, with logprobs there to bf16 precision."""
    if dtype == torch.float32:
        return _assert_same(got, ref)
    agreed = total = 0
    for g, r in zip(got, ref, strict=True):
        n = next((i for i, (a, b) in enumerate(zip(g.token_ids, r.token_ids)) if a != b), len(r.token_ids))
        assert g.logprobs[:n] == pytest.approx(r.logprobs[:n], abs=0.05)
        agreed, total = agreed + n, total + len(r.token_ids)
    assert agreed >= 0.6 * total


def test_engine_rmsnorm_is_transformers_bit_for_bit(tiny_model):
    """The engine's RMSNorm gives transformers' bits in each compute dtype (bf16: normalised in
    fp32, cast back, then scaled)."""
    norm = tiny_model.model.layers[0].input_layernorm
    for dtype in (torch.float32, torch.bfloat16):
        eng = DecodeEngine(copy.deepcopy(tiny_model).to(dtype))
        ref = copy.deepcopy(norm).to(dtype)
        with torch.no_grad():
            ref.weight.normal_(1, 0.3)
            x = (torch.randn(7, ref.weight.shape[0]) * 3).to(dtype)
            assert torch.equal(eng._rms(x, ref.weight), ref(x))
