"""Same seed, same config, same numbers: a 2-step `agentopd train` of every method.

Runs the CLI (so it measures what a user runs, across refactors of the code under it) with tiny
random Llama models built from a config (student seed 0, a second one as the hf teacher) and
writes every logged metric except timings to a JSON file. With `--compare REF` it checks each
value against a file written earlier (tolerance 1e-6) and exits 1 on any difference.

Usage:
    .venv/bin/python benchmarks/same_numbers.py --out benchmarks/out/same_numbers/after.json \
        --compare benchmarks/out/same_numbers/before.json [--extra="--no-continuous-batching"]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# method name -> extra `agentopd train` flags (TEACHER stands for the tiny teacher's directory)
RUNS: dict[str, list[str]] = {
    "reverse_kl_pg-self": ["--teacher", "self", "--loss", "reverse_kl_pg"],
    "reverse_kl_pg-hf": ["--teacher", "hf:TEACHER", "--loss", "reverse_kl_pg", "--discount", "0.9"],
    "gkd-hf": ["--teacher", "hf:TEACHER", "--loss", "gkd"],
    "gkd-hf-topk8": ["--teacher", "hf:TEACHER", "--loss", "gkd", "--gkd-topk", "8"],
    "gkd-hf-lambda0": ["--teacher", "hf:TEACHER", "--loss", "gkd", "--gkd-lambda", "0.0"],
    "sft-oracle": ["--teacher", "oracle", "--loss", "sft"],
    "dagger-oracle": ["--teacher", "oracle", "--loss", "dagger"],
    "dagger-oracle-diverged": ["--teacher", "oracle", "--loss", "dagger", "--dagger-only-diverged"],
}
COMMON = ["--warm-start-steps", "0", "--steps", "2", "--episodes-per-step", "4", "--max-new-tokens", "16", "--eval-every", "2",
          "--eval-n", "4", "--ckpt-every", "2", "--max-context-tokens", "2048", "--seed", "3", "--lr", "1e-3"]


def tiny_models(root: Path) -> tuple[Path, Path]:
    """Two random Llama-shaped models over the embedded model's tokenizer (cache built by setup)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    cache = Path(os.environ.get("AGENTOPD_CACHE", Path.home() / ".cache" / "agentopd"))
    tok = AutoTokenizer.from_pretrained(cache / "SmolLM2-135M-Instruct")
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
        d = root / f"tiny{seed}"
        LlamaForCausalLM(cfg).save_pretrained(d)
        tok.save_pretrained(d)
        out.append(d)
    return out[0], out[1]


def run_all(only: list[str] | None, extra: list[str] | None = None) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        student, teacher = tiny_models(Path(tmp))
        for name, flags in RUNS.items():
            if only and name not in only:
                continue
            run = Path(tmp) / name
            cmd = [sys.executable, "-m", "agentopd.cli", "train", "--student", f"hf:{student}",
                   "--out", str(run), *COMMON, *[f.replace("TEACHER", str(teacher)) for f in flags], *(extra or [])]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
            results[name] = [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]
            print(f"{name}: {len(rows)} logged steps", flush=True)
    return results


def compare(now: dict[str, list[dict]], ref: dict[str, list[dict]], tol: float = 1e-6) -> list[str]:
    diffs = []
    for name, rows in ref.items():
        if name not in now:
            continue
        got = now[name]
        if [r["step"] for r in got] != [r["step"] for r in rows]:
            diffs.append(f"{name}: logged steps {[r['step'] for r in got]} vs {[r['step'] for r in rows]}")
            continue
        for a, b in zip(got, rows):
            for k in sorted(set(a) | set(b)):
                va, vb = a.get(k, "missing"), b.get(k, "missing")
                if isinstance(va, float) and isinstance(vb, float):
                    if math.isclose(va, vb, rel_tol=tol, abs_tol=tol):
                        continue
                elif va == vb:
                    continue
                diffs.append(f"{name} step {a['step']} {k}: {va} (now) vs {vb} (reference)")
    return diffs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--compare", default=None)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--extra", default="", help="more train flags for every run, e.g. --no-continuous-batching")
    args = ap.parse_args()
    results = run_all(args.only, args.extra.split())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1, sort_keys=True))
    if args.compare:
        diffs = compare(results, json.loads(Path(args.compare).read_text()))
        n = sum(len(r) for rows in results.values() for r in rows)
        print(f"compared {len(results)} runs ({n} values) with {args.compare}: {len(diffs)} differences")
        for d in diffs[:50]:
            print("  " + d)
        if diffs:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
