"""The off-policy baseline (``--loss sft``): cross-entropy on the teacher's own demonstrations.

The oracle plays each task (a message policy, rendered into the student's tokens), or an
``hf:`` teacher samples its own episodes; every demonstration trains, successful or not, as in
GKD's SFT baseline. The student never acts here, which is the exposure bias OPD removes.
`demo_step` is also every on-policy recipe's warm start (``--warm-start-steps``).
"""

from __future__ import annotations

from dataclasses import replace

from rich.console import Console

from agentopd.core.rows import episode_row
from agentopd.inference.sampling import Policy
from agentopd.metrics.episodes import demo_metrics
from agentopd.recipes.common import Run, now, start
from agentopd.recipes.config import TrainConfig
from agentopd.rollout.oracle import OraclePolicy
from agentopd.training.objectives import CrossEntropy
from agentopd.training.turn_stats import TurnAccumulator


def main(cfg: TrainConfig, console: Console | None = None) -> dict[str, float]:
    run = start(cfg, console)
    expert = OraclePolicy() if cfg.teacher == "oracle" else run.teacher_policy()
    with run.steps() as steps:
        for step in steps:
            demo_step(run, run.warm_expert() if run.warming(step) else expert, step, cfg.episodes_per_step)
    return run.last


def demo_step(run: Run, expert: Policy, step: int, n: int) -> None:
    """One SFT step: `expert` plays `n` training tasks; cross-entropy on its turns."""
    tasks = run.tasks.sample(step, run.cfg.warm_start_episodes or n if run.warming(step) else n)
    tasks = replace(tasks, window=0, replay=None)  # an expert's demonstration is played whole
    t0 = now()
    episodes = run.play(expert, tasks, step)  # the teacher acts in its own states
    t1 = now()
    rows = [episode_row(ep, i) for i, ep in enumerate(episodes)]
    run.require_targets(rows, step)
    t2 = now()
    turns = TurnAccumulator()
    metrics = run.learner.step(rows, turns.wrap(CrossEntropy()), on_policy=False)  # an expert played them
    t3 = now()
    metrics |= run.sync_policy()  # the new weights reach the sampler (vLLM's engine; nothing for hf)
    metrics |= demo_metrics(run.merged(episodes, [])[0]) | turns.metrics(run.world)
    run.end_step(step, metrics, [t0, t1, t2, t3])
