"""DAgger's relabelling cost on long sandboxed episodes: replaying each episode in a fresh env
(the code before the layered redesign) vs reading the oracle action each step recorded.

The episodes are the oracle's own on Python-v0 (every turn runs sandboxed code), 16 tasks.
Runs on either codebase, so the same command measures before and after:
    .venv/bin/python benchmarks/dagger_relabel.py          # prints one JSON line
"""

import json
import time

import agentopd  # noqa: F401  (sets OMP_WAIT_POLICY before torch)

ENV, N = "agentopd/Python-v0", 16


def main() -> None:
    try:  # after the redesign
        from agentopd.envs.registry import make_env
        from agentopd.inference.models import load_tokenizer
        from agentopd.rollout.oracle import OraclePolicy
        from agentopd.rollout.runner import run_episodes
        from agentopd.teachers.oracle import OracleTeacher

        code = "after"
    except ImportError:  # before
        from agentopd.demos import oracle_demo_episodes
        from agentopd.models import load_tokenizer
        from agentopd.registry import make_env
        from agentopd.teachers import OracleTeacher

        code = "before"
    mk = lambda: make_env(ENV, split="train")  # noqa: E731
    ids = [t.id for t in mk().unwrapped.tasks][:N]
    tok = load_tokenizer("smollm2-135m")
    t = time.perf_counter()
    if code == "after":
        eps = run_episodes(mk, OraclePolicy(), ids, list(range(N)), tokenizer=tok)
    else:
        eps = oracle_demo_episodes(mk, ids, list(range(N)), tok)
    play_s = time.perf_counter() - t
    t = time.perf_counter()
    rows = OracleTeacher(tok).relabel(eps) if code == "after" else OracleTeacher(tok).relabel(eps, mk)
    relabel_s = time.perf_counter() - t
    print(json.dumps({"code": code, "episodes": len(eps), "turns": sum(e.num_turns for e in eps),
                      "rows": len(rows), "play_s": round(play_s, 2), "relabel_s": round(relabel_s, 4)}))


if __name__ == "__main__":
    main()
