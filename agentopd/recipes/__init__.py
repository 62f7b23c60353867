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
    if cfg.loss == "auto" and cfg.teacher.startswith("openai:"):
        cfg = _pick_served_loss(cfg, console or Console())
    return recipes[cfg.resolved_loss()](cfg, console)


def _pick_served_loss(cfg: TrainConfig, console: Console) -> TrainConfig:
    """``--loss auto`` with a served teacher: reverse_kl_pg when the server gives prompt logprobs,
    else dagger (its text relabels), by a probe before anything loads."""
    import dataclasses

    from agentopd.core.config import UserError
    from agentopd.inference.models import load_tokenizer, parse_spec
    from agentopd.inference.openai_client import ServedError
    from agentopd.teachers.factory import make_client

    spec = parse_spec(cfg.teacher)
    client = make_client(spec.base_url or "", spec.name, dataclasses.replace(cfg.served_options(cfg.out), cache_path=None))
    ids = load_tokenizer(parse_spec(cfg.student).name).encode("The answer is 42.", add_special_tokens=False)
    try:
        caps = client.probe(ids)
    except ServedError as e:
        raise UserError(f"teacher {spec.name!r} at {spec.base_url}: {e}") from None
    loss = "reverse_kl_pg" if caps.prompt_logprobs else "dagger"
    console.print(f"--loss auto: the teacher server {'gives' if caps.prompt_logprobs else 'gives no'} prompt logprobs, "
                  f"so {loss}")
    return dataclasses.replace(cfg, loss=loss)


__all__ = ["LOSSES", "TrainConfig", "train"]
