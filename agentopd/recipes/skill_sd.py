"""Skill-SD (``--loss skill_sd``; Wang et al., REFERENCES section 4): skill-conditioned
self-distillation with GRPO on the env's rewards.

Each step plays `group_size` episodes of each sampled task with the student. The teacher is
the student's own current weights, given a skill card for the task (retrieved from the run's
skill library by UCB; the student never sees it), scoring the student's sampled tokens. The
loss is GRPO on group-normalised env rewards plus `skill_kl_weight` times the
importance-weighted k3 estimate of KL(student || teacher). After the step every card used is
credited with its episodes' rewards, and the writer writes new cards from the finished
episodes (rules from the env oracle's traces, or a model as an LLM writer).
"""

from __future__ import annotations

from dataclasses import replace

from rich.console import Console

from agentopd.core.rows import group_advantages
from agentopd.metrics.episodes import rollout_metrics
from agentopd.recipes import sft
from agentopd.recipes.common import Run, now, start
from agentopd.recipes.config import TrainConfig
from agentopd.rollout.tasks import TaskBatch
from agentopd.teachers.check import check_signal
from agentopd.teachers.skills import LLMWriter, RuleWriter, SkillLibrary, SkillWriter, expert_traces
from agentopd.training.objectives import SkillSD
from agentopd.training.turn_stats import TurnAccumulator


def main(cfg: TrainConfig, console: Console | None = None) -> dict[str, float]:
    run = start(cfg, console)
    saved = run.resumed_extra.get("skills")
    run.skills = SkillLibrary.from_json(saved) if saved else SkillLibrary(ucb_c=cfg.skill_ucb_c)
    writer = make_writer(run)
    experts: dict = {}  # task id -> the oracle's own episode of it (what the rule writer reads)
    objective = SkillSD(kl_weight=cfg.skill_kl_weight, clip_eps=cfg.clip_eps)
    with run.steps() as steps:
        for step in steps:
            if run.warming(step):  # SFT on the oracle's demonstrations first (--warm-start-steps)
                sft.demo_step(run, run.warm_expert(), step, cfg.episodes_per_step)
                continue
            tasks = grouped(run.tasks.sample(step, cfg.episodes_per_step // cfg.group_size), cfg.group_size)
            t0 = now()
            episodes = run.play(run.policy, tasks, step)  # G episodes of each task, by the student
            experts |= expert_traces(run.make_train, [e for e in episodes if e.task_id not in experts],
                                     run.tokenizer)
            cards = {}
            for task_id in dict.fromkeys(e.task_id for e in episodes):  # one card per task and step
                if not run.skills.cards(task_id):  # first visit: a card from the oracle's own trace
                    ex = experts[task_id]
                    card = writer.write(ex, ex, step, run.skills.next_id(task_id))
                    if card is not None:
                        run.skills.add(card)
                cards[task_id] = run.skills.retrieve(task_id, tasks.rng)
            episodes = [replace(e, skill_card=c.as_dict()) for e in episodes if (c := cards[e.task_id]) is not None]
            t1 = now()
            rows = run.teacher.relabel(episodes, objective.request)  # the student given the card scores its tokens
            adv = group_advantages([e.reward for e in episodes], [e.task_id for e in episodes])
            rows = [replace(r, advantage=a) for r, a in zip(rows, adv)]
            metrics = check_signal(rows)
            run.require_targets(rows, step)
            t2 = now()
            turns = TurnAccumulator()
            metrics |= run.learner.step(rows, turns.wrap(objective))
            t3 = now()
            metrics |= run.sync_policy()  # the new weights reach the sampler (vLLM's engine; nothing for hf)
            for e in episodes:  # credit the cards used, then write new ones from this step's episodes
                run.skills.record(cards[e.task_id].id, e.reward)  # type: ignore[union-attr]
            for e in episodes:
                card = writer.write(e, experts.get(e.task_id), step, run.skills.next_id(e.task_id))
                if card is not None:
                    run.skills.add(card)
            run.skills.save(run.dir / "skills.json")
            metrics |= rollout_metrics(episodes, rows) | turns.metrics() | run.skills.stats()
            metrics["skills/writer_fallbacks"] = float(getattr(writer, "fallbacks", 0))
            metrics["skills/groups_with_signal"] = group_signal(episodes)
            run.end_step(step, metrics, [t0, t1, t2, t3], episodes)
    return run.last


def grouped(batch: TaskBatch, g: int) -> TaskBatch:
    """Each task of `batch` `g` times in a row, with distinct env seeds."""
    ids = tuple(t for t in batch.task_ids for _ in range(g))
    seeds = tuple((s + j) % 2**31 for s in batch.seeds for j in range(g))
    return replace(batch, task_ids=ids, seeds=seeds)


def group_signal(episodes) -> float:
    """Fraction of task groups whose rewards differ (GRPO's advantage is zero in the others)."""
    by: dict[str, set[float]] = {}
    for e in episodes:
        by.setdefault(e.task_id, set()).add(e.reward)
    return sum(len(v) > 1 for v in by.values()) / max(1, len(by))


def make_writer(run: Run) -> SkillWriter:
    """`--skill-writer`: rules, self (the student writes its own cards) or an hf:<model>."""
    spec = run.cfg.skill_writer
    if spec == "rules":
        return RuleWriter()
    if spec == "self":
        return LLMWriter.from_policy(run.policy, run.tokenizer)
    from agentopd.inference.factory import make_token_policy

    policy = make_token_policy(spec, device=run.cfg.device, dtype=run.cfg.dtype)
    return LLMWriter.from_policy(policy, policy.tokenizer)
