"""The env checker over every registered agentopd env (Gymnasium's tests/envs pattern)."""

import json

import pytest

from agentopd.envs.checker import check_env
from agentopd.envs.registry import agentopd_env_ids, make_env
from agentopd.envs.suites import load_tasks


@pytest.mark.parametrize("env_id", agentopd_env_ids())
def test_registered_env_passes_checker_and_oracle_solves_every_task(env_id):
    assert check_env(env_id) == []


@pytest.mark.parametrize("env_id", agentopd_env_ids())
def test_suite_sizes_splits_and_turn_counts(env_id):
    env = make_env(env_id)
    family = env.unwrapped.family
    train, test = load_tasks(family, "train"), load_tasks(family, "test")
    assert len(train) >= 300 and len(test) >= 100
    def content(t):  # a task is its requests plus its family data (initial state, answers)
        return json.dumps([t.requests, t.data], sort_keys=True)

    assert not {content(t) for t in train} & {content(t) for t in test}, "test tasks leak into train"
    assert len({t.id for t in train + test}) == len(train) + len(test)
    assert {t.split for t in train} == {"train"} and {t.split for t in test} == {"test"}
    assert any(len(t.requests) > 1 for t in train), "no multi-request episodes"
    assert {t.difficulty for t in train} >= {1, 2, 3}


@pytest.mark.parametrize("env_id", agentopd_env_ids())
def test_oracle_episodes_are_genuinely_multi_turn(env_id, tokenizer):
    from agentopd.rollout.oracle import OraclePolicy
    from agentopd.rollout.runner import run_episodes

    env = make_env(env_id)
    ids = [t.id for t in env.unwrapped.tasks[:40]]
    eps = run_episodes(lambda: make_env(env_id), OraclePolicy(), ids, [0] * len(ids), tokenizer=tokenizer)
    turns = [e.num_turns for e in eps]
    assert min(turns) >= 2 and max(turns) <= 8
    assert max(turns) >= 4
