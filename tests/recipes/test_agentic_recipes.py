"""The agentic recipes end to end on a tiny model: the warm start, TCOD's curricula, Skill-SD."""

import json

import pytest
import torch

from agentopd.recipes import TrainConfig
from agentopd.recipes import train as main
from agentopd.teachers.local import LogitTeacher
from agentopd.training.learner import OptimConfig, lr_lambda


def _cfg(tiny_dir, out, **kw):
    base = dict(student=f"hf:{tiny_dir}", steps=2, episodes_per_step=2, out=str(out), max_new_tokens=8,
                eval_every=100, eval_n=2, ckpt_every=100, max_context_tokens=2048, warm_start_steps=0,
                warm_start_episodes=0)
    return TrainConfig(**{**base, **kw})


def _rows(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_warm_start_then_the_method_in_one_run(tiny_dir, tmp_path):
    cfg = _cfg(tiny_dir, tmp_path / "run", teacher="self", warm_start_steps=2, steps=1, lr=1e-5,
               warm_start_lr=3e-4, warm_start_episodes=3)
    main(cfg)
    rows = _rows(tmp_path / "run")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert "eval/success" in rows[0] and "eval/success" in rows[2] and "eval/success" in rows[3]  # each boundary
    assert "eval/success" not in rows[1]
    for r in rows[1:3]:  # the warm start: SFT on the oracle's demonstrations, at its own lr
        assert r["stage/warm_start"] == 1.0 and r["demo/success"] == 1.0 and r["demo/episodes"] == 3
        assert r["learner/lr"] == pytest.approx(3e-4)
    assert "stage/warm_start" not in rows[3] and "teacher/reverse_kl" in rows[3]
    assert rows[3]["learner/lr"] == pytest.approx(1e-5)
    ckpts = sorted(p.name for p in (tmp_path / "run").glob("step_*"))
    assert "step_2" in ckpts  # a checkpoint at the boundary: the warm-started student is kept


def test_stage_lr_then_schedule():
    f = lr_lambda(OptimConfig(lr=1e-5, stage_steps=3, stage_lr=1e-4, warmup_steps=2), total_steps=10)
    assert [round(f(s) * 1e-5, 12) for s in range(7)] == [1e-4, 1e-4, 1e-4, 5e-6, 1e-5, 1e-5, 1e-5]


@pytest.mark.parametrize("curriculum", ["f2b", "b2f", "kl"])
def test_tcod_curricula_shape_the_students_episodes(tiny_dir, tmp_path, curriculum):
    cfg = _cfg(tiny_dir, tmp_path / "run", teacher="self", curriculum=curriculum, curriculum_every=1,
               episodes_per_step=3, steps=2, eval_every=0)
    main(cfg)
    rows = _rows(tmp_path / "run")
    if curriculum in ("f2b", "kl"):
        assert rows[0]["curriculum/window"] == 1.0
        assert rows[0]["rollout/mean_turns"] <= 1.0  # the student acted for one turn at most
        if curriculum == "f2b":
            assert rows[1]["curriculum/window"] == 2.0 and rows[1]["rollout/mean_turns"] <= 2.0
    else:  # the oracle played all but the last j turns; those never train
        assert rows[0]["curriculum/replayed_turns"] >= rows[1]["curriculum/replayed_turns"] > 0
    state = torch.load(tmp_path / "run" / "step_2" / "trainer_state.pt", weights_only=False)
    assert "curriculum" in state["extra"]


def test_skill_sd_runs_grpo_with_a_skill_library_and_resumes_it(tiny_dir, tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(tiny_dir, out, teacher="self", loss="skill_sd", episodes_per_step=4, group_size=2, steps=1,
               eval_every=0, ckpt_every=1, temperature=1.0)
    main(cfg)
    (row,) = _rows(out)
    assert {"loss/pg", "loss/k3", "loss/k3_raw", "skills/cards", "skills/groups_with_signal"} <= set(row)
    assert row["skills/tasks_with_cards"] == 2  # one card per task at least, from the oracle's trace
    lib = json.loads((out / "skills.json").read_text())
    n_cards = row["skills/cards"]
    main(_cfg(tiny_dir, out, teacher="self", loss="skill_sd", episodes_per_step=4, group_size=2, steps=2,
              eval_every=0, ckpt_every=1, temperature=1.0, resume=True))
    rows = _rows(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[1]["skills/cards"] >= n_cards  # the library came back with the checkpoint
    assert lib  # persisted in the run directory


def test_teacher_temperature_softens_the_sampled_token_signal(tiny_model, tokenizer):
    ids = tuple(tokenizer.encode("a b c d e f", add_special_tokens=False))
    from agentopd.core.rows import TrainRow

    row = TrainRow(ids, (0, 0, 1, 1, 1, 1), (0.0,) * len(ids), (-1, -1, 0, 0, 0, 0))
    cold, hot = LogitTeacher(tiny_model, tokenizer), LogitTeacher(tiny_model, tokenizer)
    hot.temperature = 2.0
    (a,), (b,) = cold.score([row]), hot.score([row])
    with torch.no_grad():
        logits = tiny_model(torch.tensor([ids])).logits[0].float()
    for p in range(2, len(ids)):
        want = torch.log_softmax(logits[p - 1] / 2.0, -1)[ids[p]].item()
        assert b.teacher_logp[p] == pytest.approx(want, abs=1e-4)
        assert a.teacher_logp[p] == pytest.approx(torch.log_softmax(logits[p - 1], -1)[ids[p]].item(), abs=1e-4)
    assert a.teacher_top1 == b.teacher_top1


@pytest.mark.parametrize("kw, match", [
    (dict(curriculum="f2b", loss="sft", teacher="oracle"), "curriculum f2b shapes"),
    (dict(loss="skill_sd", teacher="oracle"), "use --teacher self"),
    (dict(loss="skill_sd", episodes_per_step=6, group_size=4), "multiple"),
    (dict(warm_start_steps=2, warm_start_from="teacher"), "hf:<model> teacher"),
    (dict(curriculum="sideways"), "curriculum 'sideways'"),
    (dict(teacher_temperature=0), "teacher_temperature"),
    (dict(skill_writer="gpt"), "skill_writer"),
    (dict(curriculum="kl", teacher="oracle"), "teacher KL"),
])
def test_agentic_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw).validate()
