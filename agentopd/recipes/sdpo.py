"""SDPO (``--loss sdpo``; REFERENCES section 8): self-distillation from feedback or a
successful sibling.

Each step plays `group_size` episodes of each sampled task with the student. The teacher is
the student's own current weights given privileged context in its system message: a
successful sibling episode of the same task when the group has one (another than the episode
itself), else the env's feedback on this episode (its tool errors and that it failed). It
scores the student's sampled tokens, and the loss is sg(log pi_S - log pi_T) log pi_S with the
importance weight capped (at 2 as published). The student never sees the context.
"""

from __future__ import annotations

from dataclasses import replace

from rich.console import Console

from agentopd.core.types import Episode
from agentopd.metrics.episodes import rollout_metrics
from agentopd.recipes import sft
from agentopd.recipes.common import now, start
from agentopd.recipes.config import TrainConfig
from agentopd.recipes.skill_sd import group_signal, grouped
from agentopd.teachers.check import check_signal
from agentopd.training.objectives import SDPO
from agentopd.training.turn_stats import TurnAccumulator

CLIP = 300
"""Characters of each turn and tool result kept in the privileged context."""


def main(cfg: TrainConfig, console: Console | None = None) -> dict[str, float]:
    run = start(cfg, console)
    objective = SDPO(ratio_cap=cfg.sdpo_ratio_cap)
    with run.steps() as steps:
        for step in steps:
            if run.warming(step):  # SFT on the oracle's demonstrations first (--warm-start-steps)
                sft.demo_step(run, run.warm_expert(), step, cfg.episodes_per_step)
                continue
            tasks = grouped(run.tasks.sample(step, cfg.episodes_per_step // cfg.group_size), cfg.group_size)
            t0 = now()
            episodes = run.play(run.policy, tasks, step)  # G episodes of each task, by the student
            episodes, from_sibling = with_context(episodes)
            t1 = now()
            rows = run.teacher.relabel(episodes, objective.request)  # the student given the context scores them
            metrics = check_signal(rows)
            run.require_targets(rows, step)
            t2 = now()
            turns = TurnAccumulator()
            metrics |= run.learner.step(rows, turns.wrap(objective))
            t3 = now()
            metrics |= run.sync_policy()  # the new weights reach the sampler (vLLM's engine; nothing for hf)
            metrics |= rollout_metrics(episodes, rows) | turns.metrics()
            metrics["sdpo/sibling_context_frac"] = from_sibling / max(1, len(episodes))
            metrics["sdpo/groups_with_success"] = group_signal(episodes)
            run.end_step(step, metrics, [t0, t1, t2, t3], episodes)
    return run.last


def with_context(episodes: list[Episode]) -> tuple[list[Episode], int]:
    """Each episode with its privileged context (in `Episode.skill_card`, which the self teacher
    reads): a successful sibling's transcript, else feedback on the episode itself; and how many
    got a sibling."""
    out, n_sib = [], 0
    for i, e in enumerate(episodes):
        sibling = next((s for j, s in enumerate(episodes) if j != i and s.task_id == e.task_id and s.success), None)
        if sibling is not None:
            n_sib += 1
            card = {"successful_attempt": transcript(sibling)}
        else:
            card = {"feedback": feedback(e)}
        out.append(replace(e, skill_card=card))
    return out, n_sib


def transcript(ep: Episode) -> str:
    """The episode's assistant turns and tool results, each clipped."""
    lines = []
    for t in ep.turns:
        lines.append(f"assistant: {t.text[:CLIP]}")
        lines += [f"tool: {r.content[:CLIP]}" for r in t.tool_results]
    return "\n".join(lines)


def feedback(ep: Episode) -> str:
    """What the env said about the episode: its outcome, tool errors, and how it ended."""
    errors = [f"turn {t.index}: {r.content[:CLIP]}" for t in ep.turns for r in t.tool_results if r.error]
    verdict = "solved the task" if ep.success else f"did not solve the task (it ended: {ep.stop_reason.value})"
    text = f"This attempt {verdict}."
    if errors:
        text += " Tool errors: " + "; ".join(errors)
    if ep.turns:
        text += f" Its last turn was: {ep.turns[-1].text[:CLIP]}"
    return text
