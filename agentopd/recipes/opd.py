"""On-policy distillation with the sampled-token reverse KL (``--loss reverse_kl_pg``).

The student acts in its own states; the teacher scores the tokens it sampled; the reverse KL
per token, -(log mu - log pi_T), is the advantage of a clipped policy-gradient step.
"""

from __future__ import annotations

from rich.console import Console

from agentopd.metrics.episodes import rollout_metrics
from agentopd.recipes import sft
from agentopd.recipes.common import now, start
from agentopd.recipes.config import TrainConfig
from agentopd.teachers.check import check_signal
from agentopd.training.objectives import ReverseKLPG
from agentopd.training.turn_stats import TurnAccumulator


def main(cfg: TrainConfig, console: Console | None = None) -> dict[str, float]:
    run = start(cfg, console)
    objective = ReverseKLPG(kl_coef=cfg.kl_coef, clip_eps=cfg.clip_eps, discount=cfg.discount)
    with run.steps() as steps:
        for step in steps:
            if run.warming(step):  # SFT on the oracle's demonstrations first (--warm-start-steps)
                sft.demo_step(run, run.warm_expert(), step, cfg.episodes_per_step)
                continue
            tasks = run.tasks.sample(step, cfg.episodes_per_step)
            t0 = now()
            episodes = run.play(run.policy, tasks, step)  # the student acts in its own states
            t1 = now()
            rows = run.teacher.relabel(episodes, objective.request)  # the teacher scores its tokens
            metrics = check_signal(rows)
            run.warn_if_zero_signal(rows, step)
            run.require_targets(rows, step)
            t2 = now()
            turns = TurnAccumulator()
            metrics |= run.learner.step(rows, turns.wrap(objective))
            t3 = now()
            metrics |= rollout_metrics(episodes, rows) | turns.metrics()
            run.end_step(step, metrics, [t0, t1, t2, t3], episodes)
    return run.last
