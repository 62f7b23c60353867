"""Recipes: one short file per method whose loop reads top to bottom (rollout -> relabel ->
learner step -> metrics), on the shared plumbing of `common`. `TrainConfig` (`config`) is the
one dataclass the CLI is generated from; `eval` is `agentopd eval`. Recipes import every layer
below; the CLI imports recipes.
"""

from __future__ import annotations

from rich.console import Console

from agentopd.recipes.config import LOSSES, TrainConfig


def train(cfg: TrainConfig, console: Console | None = None) -> dict[str, float]:
    """Run the recipe of `cfg`'s method (its resolved loss)."""
    from agentopd.recipes import dagger, gkd, opd, sdpo, sft, skill_sd

    recipes = {"reverse_kl_pg": opd.main, "gkd": gkd.main, "sft": sft.main, "dagger": dagger.main,
               "skill_sd": skill_sd.main, "sdpo": sdpo.main,
               # objectives of the OPD recipe (agentopd/recipes/opd.py:objective_for)
               "akl": opd.main, "todi": opd.main, "eopd": opd.main, "gopd": opd.main}
    assert set(recipes) == set(LOSSES)
    cfg.validate()
    return recipes[cfg.resolved_loss()](cfg, console)


__all__ = ["LOSSES", "TrainConfig", "train"]
