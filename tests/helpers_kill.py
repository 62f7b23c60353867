"""Run the `agentopd` CLI and SIGKILL it at a chosen point (a test harness, not library code).

    python helpers_kill.py POINT N -- <agentopd arguments>

POINT: rollout | teacher | learner | checkpoint | metrics | eval_episode; the process dies at the
N-th call (``metrics`` and ``eval_episode`` first write half of their line, as a kill mid-write
would leave it)."""

import os
import signal
import sys

import agentopd  # noqa: F401
from agentopd.metrics import sinks
from agentopd.recipes import common
from agentopd.recipes import eval as eval_recipe
from agentopd.teachers import oracle
from agentopd.training import learner

TARGETS = {
    "rollout": (common, "run_episodes"),
    "teacher": (oracle.OracleTeacher, "relabel"),
    "learner": (learner.Learner, "step"),
    "checkpoint": (learner, "write_manifest"),  # the model and trainer state are written, not yet the manifest
    "metrics": (sinks.MetricsLogger, "log"),
    "eval_episode": (eval_recipe, "_append"),  # `agentopd eval --out` writing its N-th finished episode
}


def main() -> None:
    point, nth = sys.argv[1], int(sys.argv[2])
    args = sys.argv[sys.argv.index("--") + 1:]
    owner, name = TARGETS[point]
    original = getattr(owner, name)
    calls = [0]

    def wrapped(*a, **k):
        calls[0] += 1
        if calls[0] == nth:
            if point == "metrics":
                logger = a[0]
                logger._f.write('{"step": %d, "loss/ce": 1.2' % a[1])  # half a line
                logger._f.flush()
            if point == "eval_episode":
                a[0].write('{"env_id": "agentopd/Ca')
                a[0].flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*a, **k)

    setattr(owner, name, wrapped)
    from agentopd.cli import app

    sys.argv = ["agentopd", *args]
    app()


if __name__ == "__main__":
    main()
