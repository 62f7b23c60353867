"""On-policy distillation on the student's own episodes, with the objective the config names.

The student acts in its own states; the teacher scores the tokens it sampled; the objective
turns that into a loss:
- ``reverse_kl_pg``: the sampled-token reverse KL, -(log mu - log pi_T), as the advantage of a
  clipped policy-gradient step (REFERENCES section 1);
- ``gopd``: the same step against the extrapolated target lambda log pi_T + (1 - lambda) log
  pi_ref (G-OPD / ExOPD, section 5), pi_ref the student as the method starts (or --gopd-ref);
- ``akl``, ``todi``: adaptive divergences over the teacher's distribution (full or top-K);
- ``eopd``: reverse_kl_pg plus forward KL where the teacher's entropy is high.
With ``--tip-ratio``, only a drawn fraction of the tokens carries the loss (TIP, section 6).
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from rich.console import Console

from agentopd.core.capabilities import Signal, SignalRequest
from agentopd.core.rows import TrainRow
from agentopd.metrics.episodes import rollout_metrics
from agentopd.recipes import sft
from agentopd.recipes.common import Run, now, start
from agentopd.recipes.config import TrainConfig
from agentopd.teachers.check import check_signal
from agentopd.training import divergences
from agentopd.training.objectives import (
    AdaptiveKL,
    EntropyAwareOPD,
    ReverseKLPG,
    TokenwiseDivergence,
)
from agentopd.training.selection import select_tokens
from agentopd.training.turn_stats import TurnAccumulator


def objective_for(cfg: TrainConfig):
    loss = cfg.resolved_loss()
    if loss == "akl":
        return AdaptiveKL(cfg.akl_mu, cfg.gkd_topk)
    if loss == "todi":
        return TokenwiseDivergence(cfg.todi_beta, cfg.gkd_topk)
    if loss == "eopd":
        return EntropyAwareOPD(cfg.eopd_fkl_coef, cfg.eopd_entropy_threshold, cfg.kl_coef, cfg.clip_eps, cfg.gkd_topk)
    return ReverseKLPG(kl_coef=cfg.kl_coef, clip_eps=cfg.clip_eps, discount=cfg.discount)  # reverse_kl_pg, gopd


def main(cfg: TrainConfig, console: Console | None = None) -> dict[str, float]:
    run = start(cfg, console)
    objective = objective_for(cfg)
    request = objective.request
    if cfg.tip_ratio and cfg.tip_gamma and request.kind == Signal.SAMPLED_LOGPROBS:
        request = SignalRequest(Signal.FULL_LOGITS)  # TIP's JSD reads the teacher's distribution
    ahead = Ahead(run) if cfg.overlap_rollouts else None
    with run.steps() as steps:
        for step in steps:
            if run.warming(step):  # SFT on the oracle's demonstrations first (--warm-start-steps)
                sft.demo_step(run, run.warm_expert(), step, cfg.episodes_per_step)
                continue
            t0 = now()
            if ahead is not None:  # sampled while the last step learned (weights one update old)
                episodes, overlap = ahead.take(step)
            else:
                episodes = run.play(run.policy, run.tasks.sample(step, cfg.episodes_per_step), step)
            t1 = now()
            # the sampler catches up, then plays the next step (not past the end, nor over an eval,
            # which must see this step's update and has the sampler to itself)
            prefetch = ahead is not None and step + 1 < cfg.total_steps() and not run.eval_due(step)
            if ahead is not None and prefetch:
                overlap |= ahead.start(step + 1)
            rows = run.teacher.relabel(episodes, request)  # the teacher scores its tokens
            metrics = check_signal(rows)
            run.warn_if_zero_signal(rows, step)
            run.require_targets(rows, step)
            if cfg.resolved_loss() == "gopd":  # reward extrapolation against the reference policy
                rows, gap = extrapolate(rows, run.reference(), cfg.gopd_lambda)
                metrics["teacher/ref_gap"] = gap
            if cfg.tip_ratio:  # TIP: only a drawn fraction of the tokens carries the loss
                rows, kept = select_tokens(run.scorer, rows, cfg.tip_ratio, cfg.tip_alpha, cfg.tip_gamma,
                                           seed=cfg.seed * 7919 + step, max_tokens=cfg.micro_tokens(),
                                           autocast=cfg.compute_dtype() == "bfloat16")
                metrics |= kept
            t2 = now()
            turns = TurnAccumulator()
            metrics |= run.learner.step(rows, turns.wrap(objective))
            t3 = now()
            if not prefetch:
                metrics |= run.sync_policy()  # the new weights reach the sampler (vLLM's engine, a copy)
            if ahead is not None:
                metrics |= overlap
            episodes, rows = run.merged(episodes, rows)  # every rank's, under torchrun
            metrics |= rollout_metrics(episodes, rows) | turns.metrics(run.world)
            run.end_step(step, metrics, [t0, t1, t2, t3], episodes)
    return run.last


class Ahead:
    """Overlapped rollouts (`--overlap-rollouts`): the next step's episodes play in a
    background thread, on the sampler's own copy of the weights, while the teacher and the
    learner work on this step's. The sampler is synced only between rollouts (never while one
    plays), so each step trains on episodes drawn one update earlier; ``rollout/staleness``
    logs it and ``rollout/importance_ratio_*`` the correction it needs."""

    def __init__(self, run: Run):
        self.run = run
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollout-ahead")
        self.pending: tuple[int, int, Future] | None = None
        """(step, learner step its weights are from, the episodes' future)."""

    def start(self, step: int) -> dict[str, float]:
        run = self.run
        sync = run.sync_policy()  # the previous step's update, now that no rollout is playing
        tasks = run.tasks.sample(step, run.cfg.episodes_per_step)
        self.pending = (step, run.learner.step_count, self.pool.submit(run.play, run.policy, tasks, step))
        return sync

    def take(self, step: int) -> tuple[list, dict[str, float]]:
        """This step's episodes (played now if none are pending: the first step) and metrics."""
        if self.pending is None or self.pending[0] != step:
            self.start(step)
        assert self.pending is not None
        _, weights_step, fut = self.pending
        t = now()
        episodes = fut.result()
        self.pending = None
        return episodes, {"rollout/staleness": float(self.run.learner.step_count - weights_step),
                          "time/rollout_wait_s": now() - t}


def extrapolate(rows: list[TrainRow], reference, lam: float) -> tuple[list[TrainRow], float]:
    """Rows whose teacher log-prob is G-OPD's target lam log pi_T + (1 - lam) log pi_ref (the
    reference scores the same tokens); and the mean log pi_T - log pi_ref over the targets."""
    scored = reference.score(rows)
    out, gaps = [], []
    for r, s in zip(rows, scored):
        assert r.signal is not None and s.signal is not None  # check_signal ran on these rows
        t = torch.tensor(r.signal.token_logp, dtype=torch.float64)
        ref = torch.tensor(s.signal.token_logp, dtype=torch.float64)
        mask = torch.tensor(r.loss_mask, dtype=torch.bool)
        mask[0] = False
        gaps += (t - ref)[mask].tolist()
        target = torch.where(mask, divergences.extrapolated_logp(t, ref, lam), t)
        out.append(dataclasses.replace(r, signal=dataclasses.replace(r.signal, token_logp=tuple(target.tolist()))))
    return out, sum(gaps) / max(len(gaps), 1)


__all__ = ["Run", "extrapolate", "main", "objective_for"]
