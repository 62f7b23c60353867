"""`agentopd eval --k K --samples N`: the unbiased pass@k estimator (Chen et al. 2021), its
per-task mean, the n seeded copies of each task, and the bad inputs."""

import json
import math

import pytest
from typer.testing import CliRunner

from agentopd.cli import app
from agentopd.core.types import Episode, StopReason
from agentopd.metrics.episodes import pass_at_k, pass_at_k_by_task
from agentopd.recipes.eval import EvalConfig, run_eval

runner = CliRunner()


def _naive(n: int, c: int, k: int) -> float:
    """1 - C(n-c, k) / C(n, k) in exact integers (math.comb(a, b) is 0 when b > a)."""
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 10, 20, 50])
def test_pass_at_k_matches_the_combinatorial_definition(n):
    for k in range(1, n + 1):
        for c in range(n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(_naive(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_edge_cases():
    for n in (1, 4, 10, 200):
        for k in range(1, n + 1, max(1, n // 7)):
            assert pass_at_k(n, 0, k) == 0.0  # no success: no subset holds one
            for c in range(n - k + 1, n + 1):  # n - c < k: every k-subset holds a success
                assert pass_at_k(n, c, k) == 1.0
        for c in range(n + 1):
            assert pass_at_k(n, c, 1) == pytest.approx(c / n)  # pass@1 is the success rate
    assert pass_at_k(200, 13, 100) == pytest.approx(_naive(200, 13, 100))  # no overflow, stable
    assert 0.0 <= pass_at_k(1000, 1, 10) == pytest.approx(0.01)


@pytest.mark.parametrize("n, c, k", [(3, 1, 0), (3, 1, -1), (3, 4, 1), (3, -1, 1), (2, 1, 3)])
def test_pass_at_k_refuses_what_it_cannot_estimate(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def _ep(task_id: str, success: bool, stop: StopReason = StopReason.DONE, seed: int = 0) -> Episode:
    return Episode(env_id="x", task_id=task_id, seed=seed, token_ids=(), logprobs=(), loss_mask=(), turns=(),
                   messages=(), reward=float(success), success=success, stop_reason=stop)


def test_pass_at_k_by_task_groups_by_task_id():
    eps = [_ep("a", True), _ep("a", False), _ep("a", False), _ep("a", False),  # n=4, c=1
           _ep("b", False), _ep("b", False), _ep("b", False), _ep("b", False),  # n=4, c=0
           _ep("c", True), _ep("c", True), _ep("c", False), _ep("c", True)]  # n=4, c=3
    # interleaving does not matter: grouping is by task_id
    eps = eps[::2] + eps[1::2]
    assert pass_at_k_by_task(eps, 1) == pytest.approx((1 / 4 + 0 + 3 / 4) / 3)
    assert pass_at_k_by_task(eps, 2) == pytest.approx((_naive(4, 1, 2) + 0 + 1.0) / 3)
    assert pass_at_k_by_task(eps, 4) == pytest.approx((1 + 0 + 1) / 3)
    # with equal samples per task, pass@1 is the mean success over all samples
    assert pass_at_k_by_task(eps, 1) == pytest.approx(sum(e.success for e in eps) / len(eps))


def test_pass_at_k_by_task_leaves_infra_errors_out_of_n():
    eps = [_ep("a", True), _ep("a", False), _ep("a", False, StopReason.ERROR),
           _ep("b", False), _ep("b", False, StopReason.TURN_LIMIT), _ep("b", False, StopReason.TOKEN_LIMIT)]
    assert pass_at_k_by_task(eps, 1) == pytest.approx((1 / 2 + 0) / 2)  # a: n=2 (the error is no sample)
    assert pass_at_k_by_task(eps, 2) == pytest.approx((1.0 + 0) / 2)
    # a task left with fewer than k samples is not scored; none left: NaN, never a silent 0
    assert pass_at_k_by_task(eps, 3) == pytest.approx(0.0)  # only b has 3 samples
    assert math.isnan(pass_at_k_by_task(eps, 4))
    assert math.isnan(pass_at_k_by_task([_ep("a", True, StopReason.ERROR)], 1))
    assert math.isnan(pass_at_k_by_task([], 1))
    with pytest.raises(ValueError):
        pass_at_k_by_task(eps, 0)


def test_oracle_pass_at_2_end_to_end(tmp_path):
    out = tmp_path / "ev"
    cfg = EvalConfig(env="agentopd/Calc-v0", model="oracle", n=3, k=2, samples=2, temperature=1.0, out=str(out))
    summary, episodes = run_eval(cfg)
    assert summary["eval/pass@2"] == 1.0 and summary["eval/pass@1"] == 1.0 and summary["eval/success"] == 1.0
    assert summary["eval/samples_per_task"] == 2.0 and summary["eval/episodes"] == 6.0
    lines = [json.loads(x) for x in (out / "episodes.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and len(episodes) == 6
    ids = [x["task_id"] for x in lines]
    assert len(set(ids)) == 3 and all(ids.count(t) == 2 for t in set(ids))
    # the copies of a task have distinct env seeds; copy 0 of task i keeps seed + i (as --k 1)
    seeds: dict[str, list[int]] = {}
    for x in lines:
        seeds.setdefault(x["task_id"], []).append(x["seed"])
    assert all(len(set(s)) == 2 for s in seeds.values()), seeds
    assert len({x["seed"] for x in lines}) == 6
    assert sorted(s[0] for s in seeds.values()) == [0, 1, 2]
    metrics = json.loads((out / "summary.json").read_text())
    assert metrics["metrics"]["eval/pass@2"] == 1.0 and metrics["config"]["k"] == 2
    assert metrics["tasks"] == {t: [2, 2] for t in set(ids)}  # (samples, successes) per task


def test_k1_keeps_the_old_seeds():
    summary, episodes = run_eval(EvalConfig(env="agentopd/Calc-v0", model="oracle", n=3, seed=5))
    assert [e.seed for e in episodes] == [5, 6, 7]
    assert summary["eval/pass@1"] == summary["eval/success"] == 1.0 and summary["eval/samples_per_task"] == 1.0


def _sampled(ep: Episode) -> tuple[int, ...]:
    return tuple(t for t, m in zip(ep.token_ids, ep.loss_mask) if m)


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_copies_of_a_task_draw_different_tokens(tiny_dir, batch_size):
    """A random tiny model at temperature 1: copies of a task must not replay one stream (each
    episode's draws are keyed by its index in the whole eval), whatever the batch size."""
    cfg = EvalConfig(env="agentopd/Calc-v0", model=f"hf:{tiny_dir}", n=2, k=2, samples=3, temperature=1.0,
                     max_new_tokens=6, max_context_tokens=2048, batch_size=batch_size)
    summary, episodes = run_eval(cfg)
    assert len(episodes) == 6 and summary["eval/samples_per_task"] == 3.0
    by_task: dict[str, list[Episode]] = {}
    for e in episodes:
        by_task.setdefault(e.task_id, []).append(e)
    assert len(by_task) == 2
    for eps in by_task.values():
        assert len({e.seed for e in eps}) == 3
        assert len({_sampled(e) for e in eps}) == 3, "copies of a task drew the same tokens"


def test_episodes_do_not_depend_on_the_batch_size_or_the_calls(tiny_dir, monkeypatch):
    """Temperature 1, a tiny model: batch sizes 1, 2 and 8 and splitting the eval into several
    run_episodes calls give the same episodes (draws keyed by the episode's index in the eval),
    and --k 1 keeps env seed seed + i for task i."""
    import agentopd.recipes.eval as ev

    calls = []

    def spy(make, policy, ids, seeds, rcfg, env_id, on_turn=None, tokenizer=None, **kw):
        calls.append((len(ids), kw["keys"]))
        return run_episodes(make, policy, ids, seeds, rcfg, env_id, on_turn, tokenizer, **kw)

    run_episodes = ev.run_episodes
    monkeypatch.setattr(ev, "run_episodes", spy)
    runs = {}
    for bs, open_envs in ((1, 256), (2, 256), (8, 256), (2, 3)):
        monkeypatch.setattr(ev, "OPEN_ENVS", open_envs)
        calls.clear()
        cfg = EvalConfig(env="agentopd/Calc-v0", model=f"hf:{tiny_dir}", n=7, temperature=1.0, seed=4,
                         max_new_tokens=6, max_context_tokens=2048, batch_size=bs)
        _, eps = run_eval(cfg)
        assert [e.seed for e in eps] == list(range(4, 11)) and len({e.task_id for e in eps}) == 7
        runs[bs, open_envs] = [e.token_ids for e in eps]
        if open_envs == 3:
            assert calls == [(3, [0, 1, 2]), (3, [3, 4, 5]), (1, [6])]
        else:
            assert calls == [(7, list(range(7)))]
    assert all(r == runs[1, 256] for r in runs.values())


@pytest.mark.parametrize("kw, phrase", [
    (dict(k=0), "k must be >= 1"),
    (dict(k=-2), "k must be >= 1"),
    (dict(k=4, samples=2, temperature=1.0), "samples must be >= k"),
    (dict(k=8), "--k 8 samples each task 8 times: set --temperature > 0 (e.g. 1.0), or use --k 1"),
    (dict(k=2, samples=4), "--k 2 --samples 4 samples each task 4 times: set --temperature > 0"),
    (dict(k=1, samples=3), "--k 1 without --samples"),
])
def test_config_validation(kw, phrase):
    with pytest.raises(ValueError) as err:
        EvalConfig(env="agentopd/Calc-v0", model="oracle", **kw).validate()
    assert phrase in str(err.value) and "\n" not in str(err.value)


def test_valid_configs_pass_validation():
    for kw in (dict(), dict(k=1, samples=1), dict(k=4, temperature=0.7), dict(k=2, samples=5, temperature=1.0)):
        EvalConfig(env="agentopd/Calc-v0", model="oracle", **kw).validate()


@pytest.mark.parametrize("args, phrase", [
    (["--k", "0"], "k must be >= 1"),
    (["--k", "4", "--temperature", "0"], "set --temperature > 0"),
])
def test_bad_passk_cli_input(args, phrase, tmp_path):
    out = tmp_path / "ev"
    result = runner.invoke(app, ["eval", "--env", "agentopd/Calc-v0", "--model", "oracle", *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and phrase in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not out.exists(), "a refused eval wrote its directory"


def test_cli_prints_pass_at_k(tmp_path):
    out = tmp_path / "ev"
    result = runner.invoke(app, ["eval", "--env", "agentopd/Calc-v0", "--model", "oracle", "--n", "2", "--k", "2",
                                 "--samples", "3", "--temperature", "1.0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "pass@1" in result.output and "pass@2" in result.output and "samples / task" in result.output
    assert len((out / "episodes.jsonl").read_text().splitlines()) == 6
