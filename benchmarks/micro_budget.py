"""Teacher scoring and one learner step at three micro-batch node budgets (RESULTS.md, issue 10).

A larger micro-batch recomputes a shared prefix less often but holds more activations (and,
before the block-sparse tree attention, paid attention quadratic in its nodes): this measures
where the balance lies on a machine.

Usage: .venv/bin/python benchmarks/micro_budget.py ROWS NEW_TOKENS   (e.g. 32 64, or 8 96)
"""

import copy
import sys
import time
from pathlib import Path

import agentopd  # noqa: F401  (sets OMP_WAIT_POLICY before torch)

sys.path.insert(0, str(Path(__file__).parent))
from token_path import prompts  # noqa: E402

from agentopd.core.rows import TrainRow  # noqa: E402
from agentopd.inference.hf import HFPolicy  # noqa: E402
from agentopd.inference.models import load_causal_lm, load_tokenizer  # noqa: E402
from agentopd.inference.sampling import SamplingParams  # noqa: E402
from agentopd.teachers.local import HFTeacher  # noqa: E402
from agentopd.training.learner import Learner, OptimConfig  # noqa: E402
from agentopd.training.objectives import ReverseKLPG  # noqa: E402


def main() -> None:
    n_rows, new = int(sys.argv[1]), int(sys.argv[2])
    tok = load_tokenizer("smollm2-135m")
    model = load_causal_lm("smollm2-135m").eval()
    ps = prompts(tok, n_rows)
    pol = HFPolicy(model, tok)
    pol.stop_token_ids = []  # full-length rows: a fixed amount of work
    sampled = pol.sample(ps, SamplingParams(max_new_tokens=new, temperature=1.0, seed=0))
    rows = [TrainRow(tuple(p) + s.token_ids, (0,) * len(p) + (1,) * len(s.token_ids),
                     (0.0,) * len(p) + s.logprobs, (-1,) * len(p) + (0,) * len(s.token_ids))
            for p, s in zip(ps, sampled)]
    scored = HFTeacher(model, tok, tok).score(rows)
    for budget in (4096, 2048, 1024):
        t = time.perf_counter()
        HFTeacher(model, tok, tok, max_tokens=budget).score(rows)
        tt = time.perf_counter() - t
        learner = Learner(copy.deepcopy(model), OptimConfig(lr=1e-7, max_tokens_per_micro=budget), 10,
                          pad_id=tok.pad_token_id or 0)
        t = time.perf_counter()
        learner.step(scored, ReverseKLPG())
        print(f"rows {n_rows} x {new} new, budget {budget}: teacher {tt:.1f} s, learner "
              f"{time.perf_counter() - t:.1f} s, {len(learner.micro_batches(scored))} micro-batches", flush=True)


if __name__ == "__main__":
    main()
