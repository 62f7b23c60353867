"""Generalized knowledge distillation (``--loss gkd``; Agarwal et al., REFERENCES section 2).

A fraction `gkd_lambda` of steps trains on the student's own episodes, the rest on episodes the
teacher plays; either way the teacher's distribution at every student token (full vocabulary, or
its top-K plus a tail bucket with ``--gkd-topk``) is the target of a JSD(beta) loss. The teacher
runs once per step: its log-probs from relabelling are what the loss reads.
"""

from __future__ import annotations

from rich.console import Console

from agentopd.metrics.episodes import demo_metrics, rollout_metrics
from agentopd.recipes import sft
from agentopd.recipes.common import now, start
from agentopd.recipes.config import TrainConfig
from agentopd.teachers.check import check_signal
from agentopd.training.objectives import GKD, GKDTopK
from agentopd.training.selection import select_tokens
from agentopd.training.turn_stats import TurnAccumulator


def main(cfg: TrainConfig, console: Console | None = None) -> dict[str, float]:
    run = start(cfg, console)
    objective = (GKDTopK(cfg.gkd_topk, cfg.gkd_beta, cfg.gkd_temperature) if cfg.gkd_topk > 0
                 else GKD(cfg.gkd_beta, cfg.gkd_temperature))
    with run.steps() as steps:
        for step in steps:
            if run.warming(step):  # SFT on the oracle's demonstrations first (--warm-start-steps)
                sft.demo_step(run, run.warm_expert(), step, cfg.episodes_per_step)
                continue
            tasks = run.tasks.sample(step, cfg.episodes_per_step)
            on_policy = tasks.rng.random() < cfg.gkd_lambda
            t0 = now()
            episodes = run.play(run.policy if on_policy else run.teacher_policy(), tasks, step)
            t1 = now()
            rows = run.teacher.relabel(episodes, objective.request)  # one teacher forward per step
            metrics = check_signal(rows)
            run.warn_if_zero_signal(rows, step)
            run.require_targets(rows, step)
            if cfg.tip_ratio:  # TIP: only a drawn fraction of the tokens carries the loss
                rows, kept = select_tokens(run.scorer, rows, cfg.tip_ratio, cfg.tip_alpha, cfg.tip_gamma,
                                           seed=cfg.seed * 7919 + step, max_tokens=cfg.micro_tokens(),
                                           autocast=cfg.compute_dtype() == "bfloat16")
                metrics |= kept
            t2 = now()
            turns = TurnAccumulator()
            metrics |= run.learner.step(rows, turns.wrap(objective), on_policy=on_policy)
            t3 = now()
            metrics |= run.sync_policy()  # the new weights reach the sampler (vLLM's engine; nothing for hf)
            episodes, rows = run.merged(episodes, rows)  # every rank's, under torchrun
            metrics |= (rollout_metrics(episodes, rows) if on_policy else demo_metrics(episodes)) | turns.metrics(run.world)
            run.end_step(step, metrics, [t0, t1, t2, t3], episodes)
    return run.last
