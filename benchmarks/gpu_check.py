"""The GPU check (issue 12): agentopd's token path on a GPU machine, in a few minutes.

The GPU machine has PyTorch with CUDA and transformers but not agentopd's other dependencies
(gymnasium, typer, ...) and no model weights (at most 64 MiB of the tree travels), so this
script imports only agentopd's torch layers (`inference`, `training`, `core`: the package's
`__init__`, which registers the envs, is bypassed) and builds a random-initialised model of a
real shape from a config (throughput needs no trained weights); only the tokenizer travels.

It measures, in the model's compute dtype (bf16 on CUDA):
- the floor: one prefill forward of B x N tokens;
- `HFPolicy` rollout decode tokens/s at batch 1, 8, 32, 64 (every row forced to full length);
- teacher scoring tokens/s (`logits_at` over the sampled rows, sampled-token log-probs);
- one learner step (reverse-KL policy gradient) in tokens/s and its peak memory.
Prints a table and writes gpu_check.json to --out.

  python benchmarks/gpu_check.py --prepare            # here: copy the tokenizer to .gpu_check/
  python benchmarks/gpu_check.py --out "$OUT"         # there (the run tool carries .gpu_check)
  python benchmarks/gpu_check.py --device cpu --shape tiny --out /tmp/x   # a smoke test anywhere
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOK_DIR = ROOT / ".gpu_check" / "tokenizer"

SHAPES = {
    # SmolLM2-1.7B's shape (Llama architecture, the embedded tokenizer's 49,152-token vocabulary)
    "1.7b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                 num_key_value_heads=32),
    # SmolLM2-135M's shape
    "135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                 num_key_value_heads=3),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
}


def _torch_layers_only() -> None:
    """Import agentopd's modules without running the package `__init__` (it imports gymnasium)."""
    if "agentopd" not in sys.modules:
        pkg = types.ModuleType("agentopd")
        pkg.__path__ = [str(ROOT / "agentopd")]  # type: ignore[attr-defined]
        sys.modules["agentopd"] = pkg


def prepare() -> None:
    """Copy the embedded model's tokenizer files next to the tree (a few MiB) for the trip."""
    import agentopd  # noqa: F401
    from agentopd.inference.models import load_tokenizer

    TOK_DIR.mkdir(parents=True, exist_ok=True)
    load_tokenizer("smollm2-135m").save_pretrained(TOK_DIR)
    print(f"tokenizer saved to {TOK_DIR} ({sum(f.stat().st_size for f in TOK_DIR.iterdir()) / 2**20:.1f} MiB)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prepare", action="store_true")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--shape", default="1.7b", choices=sorted(SHAPES))
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batches", default="1,8,32,64")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "gpu_check"))
    ap.add_argument("--tokenizer", default=str(TOK_DIR), help="a saved tokenizer directory")
    args = ap.parse_args()
    if args.prepare:
        return prepare()
    _torch_layers_only()
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from agentopd.core.rows import TeacherSignal, TrainRow
    from agentopd.inference.forward import logits_at
    from agentopd.inference.hf import HFPolicy
    from agentopd.inference.sampling import SamplingParams
    from agentopd.training.learner import Learner, OptimConfig
    from agentopd.training.objectives import ReverseKLPG

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit("no CUDA device here: pass --device cpu (with --shape tiny for a smoke test)")
    tok_dir = Path(args.tokenizer)
    if not (tok_dir / "tokenizer_config.json").exists():
        sys.exit(f"no tokenizer at {tok_dir}: run `python benchmarks/gpu_check.py --prepare` first")
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    dtype = torch.bfloat16 if cuda else torch.float32
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), max_position_embeddings=4096, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      **SHAPES[args.shape])
    t0 = time.perf_counter()
    with torch.device(dev):
        model = LlamaForCausalLM(cfg).to(dtype).eval()
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    P, N = args.prompt_tokens, args.new_tokens
    g = torch.Generator().manual_seed(0)
    # random ids from the ordinary vocabulary (no special tokens, so no row stops early)
    vocab_hi = min(len(tok), 40000)

    def prompts(b: int) -> list[list[int]]:
        return torch.randint(100, vocab_hi, (b, P), generator=g).tolist()

    result: dict = {"device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
                    "torch": torch.__version__, "shape": args.shape, "params": n_params, "dtype": str(dtype),
                    "prompt_tokens": P, "new_tokens": N, "build_s": round(build_s, 2)}

    # the floor: one prefill forward of B x (P + N) tokens
    B = 32
    ids = torch.randint(100, vocab_hi, (B, P + N), generator=g).to(dev)
    with torch.no_grad():
        model(input_ids=ids[:2, :64])  # warm-up (kernels, allocator)
        sync()
        t = time.perf_counter()
        model(input_ids=ids, logits_to_keep=1)
        sync()
    result["floor_prefill_tok_s"] = B * (P + N) / (time.perf_counter() - t)

    # rollouts: decode tokens/s per batch size (prefill timed apart with max_new_tokens=1)
    policy = HFPolicy(model, tok, max_batch=max(int(b) for b in args.batches.split(",")), dtype=dtype)
    policy.stop_token_ids = []  # forced full length: no row may stop on the eos id
    rollout = {}
    for b in (int(x) for x in args.batches.split(",")):
        ps = prompts(b)
        policy.invalidate()
        policy.sample(ps[:1], SamplingParams(max_new_tokens=4, temperature=1.0))  # warm-up
        policy.invalidate()
        sync()
        t = time.perf_counter()
        policy.sample(ps, SamplingParams(max_new_tokens=1, temperature=1.0))
        sync()
        prefill_s = time.perf_counter() - t
        policy.invalidate()
        t = time.perf_counter()
        out = policy.sample(ps, SamplingParams(max_new_tokens=N, temperature=1.0))
        sync()
        total_s = time.perf_counter() - t
        n_new = sum(len(s.token_ids) for s in out)
        decode_s = max(total_s - prefill_s, 1e-9)
        rollout[b] = {"new_tokens": n_new, "total_s": round(total_s, 3), "prefill_s": round(prefill_s, 3),
                      "decode_tok_s": round((n_new - b) / decode_s, 1), "total_tok_s": round(n_new / total_s, 1)}
        print(f"rollout batch {b:3d}: {rollout[b]['decode_tok_s']:9.1f} decode tok/s "
              f"({n_new} tokens in {total_s:.2f} s, prefill {prefill_s:.2f} s)", flush=True)
        last = (ps, out)
    result["rollout"] = rollout

    # teacher scoring: the last batch's rows, sampled-token log-probs at every sampled position
    ps, out = last
    seqs = [p + list(s.token_ids) for p, s in zip(ps, out)]
    pos = [list(range(P - 1, len(sq) - 1)) for sq in seqs]
    with torch.no_grad():
        sync()
        t = time.perf_counter()
        for lo in range(0, len(seqs), 8):
            logits_at(model, seqs[lo:lo + 8], pos[lo:lo + 8]).float().log_softmax(-1)
        sync()
    n_score = sum(len(sq) for sq in seqs)
    result["teacher_score_tok_s"] = n_score / (time.perf_counter() - t)

    # one learner step: reverse-KL policy gradient on the same rows (fp32 master weights, bf16 autocast)
    model = model.float().train()
    learner = Learner(model, OptimConfig(lr=1e-6, autocast="bf16" if cuda else "none",
                                         max_tokens_per_micro=8192 if cuda else 2048),
                      total_steps=2, pad_id=tok.pad_token_id or 0)
    rows = []
    for p, s in zip(ps, out):
        n = len(p) + len(s.token_ids)
        mask = (0,) * len(p) + (1,) * len(s.token_ids)
        old = (0.0,) * len(p) + tuple(s.logprobs)
        teacher = tuple(x - 0.1 for x in old)  # any finite teacher log-probs: throughput only
        sig = TeacherSignal(teacher, (-1,) * n)
        rows.append(TrainRow(tuple(p) + tuple(s.token_ids), mask, old, (-1,) * len(p) + (0,) * len(s.token_ids),
                             signal=sig))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync()
    t = time.perf_counter()
    metrics = learner.step(rows, ReverseKLPG())
    sync()
    step_s = time.perf_counter() - t
    result["learner"] = {"tokens": sum(len(r.input_ids) for r in rows), "step_s": round(step_s, 3),
                         "tok_s": round(sum(len(r.input_ids) for r in rows) / step_s, 1),
                         "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
                         "loss_finite": bool(all(v == v for v in metrics.values()))}
    result["fractions_of_floor"] = {
        **{f"rollout_b{b}": round(r["decode_tok_s"] / result["floor_prefill_tok_s"], 4) for b, r in rollout.items()},
        "teacher": round(result["teacher_score_tok_s"] / result["floor_prefill_tok_s"], 4),
        "learner": round(result["learner"]["tok_s"] / result["floor_prefill_tok_s"], 4)}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_check.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
