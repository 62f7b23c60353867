"""Where a learner step's time goes: forward, loss, backward, optimizer (RESULTS.md, issue 10).

8 calc first-turn prompts + 96 sampled tokens each (the README main job's shape), reverse_kl_pg,
fp32, three steps; each part is timed by wrapping it (`target_logits`, the loss function,
`Tensor.backward`, the optimizer's `step`).

With --profile, one more step runs under `torch.profiler` and its op table is printed (the
matmuls' share and rate; the tree has 1,305 nodes for these rows).

Usage: .venv/bin/python benchmarks/learner_split.py [--profile]
"""

import copy
import sys
import time
from pathlib import Path

import agentopd  # noqa: F401  (sets OMP_WAIT_POLICY before torch)

sys.path.insert(0, str(Path(__file__).parent))
import torch  # noqa: E402
from token_path import prompts  # noqa: E402

import agentopd.training.learner as learner_mod  # noqa: E402
from agentopd.core.rows import TrainRow  # noqa: E402
from agentopd.inference.hf import HFPolicy  # noqa: E402
from agentopd.inference.models import load_causal_lm, load_tokenizer  # noqa: E402
from agentopd.inference.sampling import SamplingParams  # noqa: E402
from agentopd.teachers.local import HFTeacher  # noqa: E402
from agentopd.training.objectives import ReverseKLPG  # noqa: E402

SECONDS: dict[str, float] = {}


def timed(name, f):
    def wrapper(*a, **kw):
        t = time.perf_counter()
        out = f(*a, **kw)
        SECONDS[name] = SECONDS.get(name, 0.0) + time.perf_counter() - t
        return out
    return wrapper


def main() -> None:
    tok = load_tokenizer("smollm2-135m")
    model = load_causal_lm("smollm2-135m").eval()
    ps = prompts(tok, 8)
    pol = HFPolicy(model, tok)
    pol.stop_token_ids = []  # full-length rows: a fixed amount of work
    sampled = pol.sample(ps, SamplingParams(max_new_tokens=96, temperature=1.0, seed=0))
    rows = [TrainRow(tuple(p) + s.token_ids, (0,) * len(p) + (1,) * len(s.token_ids),
                     (0.0,) * len(p) + s.logprobs, (-1,) * len(p) + (0,) * len(s.token_ids))
            for p, s in zip(ps, sampled)]
    scored = HFTeacher(model, tok, tok).score(rows)
    learner_mod.target_logits = timed("forward", learner_mod.target_logits)
    torch.Tensor.backward = timed("backward", torch.Tensor.backward)
    learner = learner_mod.Learner(copy.deepcopy(model), learner_mod.OptimConfig(lr=1e-7), 10, pad_id=tok.pad_token_id or 0)
    learner.opt.step = timed("optimizer", learner.opt.step)
    loss = timed("loss", ReverseKLPG())
    for _ in range(3):
        SECONDS.clear()
        t = time.perf_counter()
        learner.step(scored, loss)
        parts = ", ".join(f"{k} {v:.2f}" for k, v in SECONDS.items())
        print(f"step {time.perf_counter() - t:.2f} s: {parts}", flush=True)
    if "--profile" in sys.argv:
        from torch.profiler import ProfilerActivity, profile

        from agentopd.inference.forward import pack

        print(f"{pack([r.input_ids for r in rows]).n_nodes} tree nodes, {sum(len(r.input_ids) for r in rows)} tokens")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            learner.step(scored, loss)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=16))


if __name__ == "__main__":
    main()
