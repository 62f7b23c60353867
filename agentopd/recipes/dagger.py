"""DAgger (``--loss dagger``): the student acts; the env's expert says what it should have done.

Every state the student reached gets the oracle's action for that state (recorded by the env
in each step's info, so nothing is replayed) as a cross-entropy target after the student's own
prefix. ``--dagger-only-diverged`` keeps only the turns that failed the per-turn oracle check.
"""

from __future__ import annotations

from rich.console import Console

from agentopd.core.capabilities import Signal, SignalRequest
from agentopd.metrics.episodes import rollout_metrics
from agentopd.recipes import sft
from agentopd.recipes.common import now, start
from agentopd.recipes.config import TrainConfig
from agentopd.training.objectives import CrossEntropy
from agentopd.training.turn_stats import TurnAccumulator


def main(cfg: TrainConfig, console: Console | None = None) -> dict[str, float]:
    run = start(cfg, console)
    objective = CrossEntropy()
    with run.steps() as steps:
        for step in steps:
            if run.warming(step):  # SFT on the oracle's demonstrations first (--warm-start-steps)
                sft.demo_step(run, run.warm_expert(), step, cfg.episodes_per_step)
                continue
            tasks = run.tasks.sample(step, cfg.episodes_per_step)
            t0 = now()
            episodes = run.play(run.policy, tasks, step)  # the student acts in its own states
            t1 = now()
            rows = run.teacher.relabel(episodes, SignalRequest(Signal.TEXT))  # the expert's turn per state
            run.require_targets(rows, step)
            t2 = now()
            turns = TurnAccumulator()
            metrics = run.learner.step(rows, turns.wrap(objective))
            t3 = now()
            metrics |= run.sync_policy()  # the new weights reach the sampler (vLLM's engine; nothing for hf)
            episodes, rows = run.merged(episodes, rows)  # every rank's, under torchrun
            metrics |= rollout_metrics(episodes, rows) | turns.metrics(run.world)
            run.end_step(step, metrics, [t0, t1, t2, t3], episodes)
    return run.last
