"""One DAgger learner step on 8 oracle calc episodes, padded vs prefix-tree packed (RESULTS.md).

Usage: .venv/bin/python benchmarks/packing_step.py
"""

import copy
import time

import agentopd  # noqa: F401  (sets OMP_WAIT_POLICY before torch)
from agentopd.envs.registry import make_env
from agentopd.inference.forward import pack
from agentopd.inference.models import load_causal_lm, load_tokenizer, parse_spec
from agentopd.rollout.oracle import OraclePolicy
from agentopd.rollout.runner import run_episodes
from agentopd.teachers.oracle import OracleTeacher
from agentopd.training import losses
from agentopd.training.learner import Learner, OptimConfig


def ce(logits_NV, batch):
    sel = batch.mask != 0
    out = losses.cross_entropy(logits_NV[None], batch.target_ids[sel][None], batch.mask[sel][None])
    return out.loss, out.metrics


def main() -> None:
    mk = lambda: make_env("agentopd/Calc-v0", split="train")  # noqa: E731
    ids = [t.id for t in mk().unwrapped.tasks][:8]
    name = parse_spec("hf:smollm2-135m").name
    tok = load_tokenizer(name)
    base = load_causal_lm(name, device="cpu", dtype="float32")
    rows = OracleTeacher(tok).relabel(run_episodes(mk, OraclePolicy(), ids, list(range(8)), tokenizer=tok))
    print(f"{len(rows)} DAgger rows, {sum(len(r.input_ids) for r in rows)} row tokens, "
          f"{pack([r.input_ids for r in rows]).n_nodes} prefix-tree nodes, {sum(r.n_targets for r in rows)} targets")
    for packed in (False, True):
        learner = Learner(copy.deepcopy(base), OptimConfig(lr=1e-5, pack=packed), 1, pad_id=tok.pad_token_id or 0)
        t = time.perf_counter()
        learner.step(rows, ce)
        print(f"pack={packed}: learner step {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
