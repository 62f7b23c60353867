"""Training recipe: 2-step smoke runs of every loss, resume after a kill, teachers, config."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers_envs import ScriptedPolicy
from transformers import AutoModelForCausalLM

from agentopd.core.config import load_config
from agentopd.core.rows import TrainRow
from agentopd.envs.registry import make_env
from agentopd.inference.models import tiny_model_from
from agentopd.recipes.config import TrainConfig, main, train_env_factory
from agentopd.rollout.render import Renderer
from agentopd.teachers.local import (
    HFTeacher,
    OracleTeacher,
    SelfTeacher,
    TeacherSignalError,
    check_signal,
    episode_row,
    oracle_turns,
    with_skill_card,
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tokenizer):
    d = tmp_path_factory.mktemp("tiny")
    tiny_model_from(tokenizer, seed=0).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def _cfg(tiny_dir, out, **kw):
    base = dict(student=f"hf:{tiny_dir}", steps=2, episodes_per_step=2, out=str(out), max_new_tokens=8,
                eval_every=2, eval_n=2, ckpt_every=1, max_context_tokens=2048)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("teacher, loss, topk", [("oracle", "dagger", 0), ("self", "reverse_kl_pg", 0),
                                                 ("TINY", "gkd", 0), ("TINY", "gkd", 8), ("oracle", "sft", 0)])
def test_two_step_smoke_run_of_every_loss(tiny_dir, tmp_path, teacher, loss, topk):
    teacher = f"hf:{tiny_dir}" if teacher == "TINY" else teacher
    cfg = _cfg(tiny_dir, tmp_path / "run", teacher=teacher, loss=loss, gkd_topk=topk)
    last = main(cfg)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]  # step 0: the held-out eval before training
    saved = load_config(TrainConfig, tmp_path / "run" / "config.json")  # the saved config reruns the run
    assert saved == dataclasses.replace(cfg, loss=loss)
    assert "eval/success" in rows[-1] and "learner/grad_norm" in rows[-1]
    assert {"eval_tool/error_rate", "eval_tool/calls_per_episode"} <= set(rows[-1])
    assert sum(v for k, v in rows[-1].items() if k.startswith("eval_stop/")) == pytest.approx(1.0)
    assert any(k.startswith("turn/0/") for k in last)
    assert {"time/rollout_s", "time/teacher_s", "time/learner_s", "time/peak_rss_mb"} <= set(last)
    if topk:
        assert 0 <= last["loss/teacher_tail_mass"] < 1
    if loss == "sft":  # oracle demonstrations: every one solves its task
        assert last["demo/success"] == 1.0
    if loss in ("reverse_kl_pg", "gkd"):
        assert "teacher/reverse_kl" in last and "turn/0/teacher_kl" in last and "turn/0/top1_agree" in last
    ckpt = tmp_path / "run" / (tmp_path / "run" / "latest").read_text()
    assert ckpt.name == "step_2"
    AutoModelForCausalLM.from_pretrained(ckpt)  # plain transformers loads it


def test_dagger_training_moves_the_student_toward_the_oracle(tiny_dir, tmp_path):
    cfg = _cfg(tiny_dir, tmp_path / "run", teacher="oracle", loss="dagger", steps=3, lr=3e-3,
               eval_every=0, ckpt_every=3)
    main(cfg)
    ces = [json.loads(x)["loss/ce"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert ces[-1] < ces[0] - 0.5, ces


def test_topk_gkd_with_the_whole_vocabulary_equals_full_gkd(tokenizer, tiny_model):
    """Wiring check: teacher top-k rows -> micro-batch -> loss, against the full-vocab path."""
    from agentopd.core.rows import collate
    from agentopd.inference.models import tiny_model_from
    from agentopd.recipes.config import make_loss
    from agentopd.training.learner import target_logits
    from agentopd.training.turn_stats import TurnAccumulator

    V = tiny_model.config.vocab_size
    rows = []
    for k, n in enumerate((30, 45)):  # two rows of different lengths: padding and row order matter
        ids = tuple(range(100 + k, 100 + k + n))
        mask = (0,) * 10 + (1,) * (n - 10)
        rows.append(TrainRow(ids, mask, (0.0,) * n, tuple(0 if m else -1 for m in mask)))
    student = tiny_model_from(tokenizer, seed=3)
    losses_by_k = {}
    for k in (0, V):
        cfg = TrainConfig(teacher="self", loss="gkd", gkd_topk=k, gkd_temperature=0.9)
        teacher = HFTeacher(tiny_model, tokenizer, tokenizer, topk=k, topk_temperature=0.9)
        batch = collate(teacher.score(rows), tokenizer.pad_token_id)
        loss, metrics = make_loss(cfg, "gkd", teacher, TurnAccumulator())(target_logits(student, batch, True), batch)
        losses_by_k[k] = float(loss.detach())
    assert losses_by_k[V] == pytest.approx(losses_by_k[0], rel=1e-4)
    with pytest.raises(ValueError, match="gkd_topk"):
        TrainConfig(teacher="self", loss="reverse_kl_pg", gkd_topk=5).validate()


def test_max_turns_caps_training_episodes():
    make = train_env_factory(TrainConfig(max_turns=2))
    env = make()
    env.reset(seed=0)
    *_, term, trunc, _ = env.step(env.unwrapped.oracle_action())
    assert not (term or trunc)
    *_, term, trunc, _ = env.step(env.unwrapped.oracle_action())  # calc's oracle needs 3+ turns here
    assert trunc and not term
    assert train_env_factory(TrainConfig())().spec.max_episode_steps == 12  # the env's own budget
    with pytest.raises(ValueError, match="max_turns"):
        TrainConfig(max_turns=-1).validate()


def _params(path):
    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(path).state_dict().items()}


def test_killed_run_resumes_and_matches_an_uninterrupted_one(tiny_dir, tmp_path):
    args = dict(teacher="oracle", loss="dagger", steps=3, eval_every=0, ckpt_every=1, lr=1e-3)
    main(_cfg(tiny_dir, tmp_path / "whole", **args))
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "agentopd.cli", "train", "--student", f"hf:{tiny_dir}", "--teacher", "oracle",
           "--loss", "dagger", "--steps", "3", "--episodes-per-step", "2", "--max-new-tokens", "8",
           "--eval-every", "0", "--ckpt-every", "1", "--lr", "1e-3", "--max-context-tokens", "2048",
           "--out", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while not (run / "latest").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = (run / "latest").read_text()
    assert done in ("step_1", "step_2", "step_3")
    with pytest.raises(SystemExit, match="--resume"):
        main(_cfg(tiny_dir, run, **args))
    main(_cfg(tiny_dir, run, resume=True, **args))
    assert (run / "latest").read_text() == "step_3"
    a, b = _params(tmp_path / "whole" / "step_3"), _params(run / "step_3")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_signal_check_refuses_missing_nan_or_constant_teacher():
    def row(tl):
        return TrainRow((1, 2, 3), (0, 1, 1), (0.0, -1.0, -2.0), (-1, 0, 0), teacher_logp=tl)

    assert "teacher/logp_mean" in check_signal([row((0.0, -0.5, -3.0))])
    with pytest.raises(TeacherSignalError, match="scored"):
        check_signal([TrainRow((1, 2, 3), (0, 1, 1), (0.0, -1.0, -2.0), (-1, 0, 0))])
    with pytest.raises(TeacherSignalError, match="NaN"):
        check_signal([row((0.0, float("nan"), -1.0))])
    with pytest.raises(TeacherSignalError, match="constant"):
        check_signal([row((0.0, -10.8, -10.8))])


def test_hf_teacher_with_another_tokenizer_is_refused(tokenizer, tiny_model):
    import copy

    other = copy.deepcopy(tokenizer)
    other.add_tokens(["<brand_new_token>"])
    with pytest.raises(ValueError, match="tokenizer differs"):
        HFTeacher(tiny_model, other, tokenizer)


def _oracle_script_episode(tokenizer, task_index=1, wrong_first=False):
    from agentopd.inference.hf import SamplingParams
    from agentopd.rollout.runner import RolloutConfig, run_episodes

    env = make_env("agentopd/Calc-v0")
    task = env.unwrapped.tasks[task_index]
    env.reset(options={"task": task.id})
    script = ["Answer: 1"] if wrong_first else []
    if not wrong_first:
        while True:
            a = env.unwrapped.oracle_action()
            script.append(a)
            *_, term, trunc, _ = env.step(a)
            if term or trunc:
                break
    (ep,) = run_episodes(lambda: make_env("agentopd/Calc-v0"), ScriptedPolicy(tokenizer, script), [task.id], [0],
                         RolloutConfig(SamplingParams(max_new_tokens=64)))
    return ep


def test_self_teacher_sees_the_same_tokens_after_its_system_message(tokenizer, tiny_model):
    ep = _oracle_script_episode(tokenizer)
    env = make_env("agentopd/Calc-v0")
    env.reset(options={"task": ep.task_id})
    row = with_skill_card(episode_row(ep), ep, env.unwrapped.skill_card(), Renderer(tokenizer))
    prefix = len(Renderer(tokenizer).full_ids([ep.messages[0]]))
    assert row.teacher_offset > 0
    assert row.teacher_ids[prefix + row.teacher_offset:] == ep.token_ids[prefix:]
    assert "golden_workflow" in tokenizer.decode(row.teacher_ids[: prefix + row.teacher_offset])
    # the teacher's logprob of each student token comes from the aligned teacher position
    scored = SelfTeacher(tiny_model, tokenizer).score([row])[0]
    with torch.no_grad():
        logp = torch.log_softmax(tiny_model(torch.tensor([row.teacher_ids])).logits[0].float(), -1)
    t = ep.turns[0]
    for p in range(t.start, t.end):
        assert scored.teacher_logp[p] == pytest.approx(logp[p - 1 + row.teacher_offset, ep.token_ids[p]].item(), abs=1e-5)


def test_oracle_teacher_relabels_the_states_the_student_reached(tokenizer):
    ep = _oracle_script_episode(tokenizer, task_index=1, wrong_first=True)  # student answers "1" at once
    rows = OracleTeacher(tokenizer).relabel([ep], lambda: make_env("agentopd/Calc-v0"))
    assert len(rows) == ep.num_turns
    expert = oracle_turns(ep, lambda: make_env("agentopd/Calc-v0"))
    for r, t, text in zip(rows, ep.turns, expert):
        assert r.input_ids[: t.start] == ep.token_ids[: t.start]  # the student's own prefix
        target = [i for i, m in zip(r.input_ids, r.loss_mask) if m]
        assert tokenizer.decode(target[:-1]) == text and target[-1] == tokenizer.eos_token_id
    assert "calculator" in expert[0]  # the expert would have used the tool here


def test_config_file_flags_and_errors(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"steps": 7, "lr": 0.001, "teacher": "self"}))
    cfg = load_config(TrainConfig, f, steps=3)
    assert (cfg.steps, cfg.lr, cfg.teacher, cfg.resolved_loss()) == (3, 0.001, "self", "reverse_kl_pg")
    (tmp_path / "c.toml").write_text('env = "agentopd/SQL-v0"\nresume = true\n')
    assert load_config(TrainConfig, tmp_path / "c.toml").env == "agentopd/SQL-v0"
    f.write_text(json.dumps({"stepz": 7}))
    with pytest.raises(ValueError, match="unknown config key"):
        load_config(TrainConfig, f)
    f.write_text(json.dumps({"steps": "many"}))
    with pytest.raises(ValueError, match="expects int"):
        load_config(TrainConfig, f)
    with pytest.raises(ValueError, match="needs teacher logprobs"):
        TrainConfig(teacher="oracle", loss="reverse_kl_pg").validate()


def test_report_writes_plots_and_summary(tiny_dir, tmp_path):
    from typer.testing import CliRunner

    from agentopd.cli import app

    main(_cfg(tiny_dir, tmp_path / "run", teacher="self", loss="reverse_kl_pg"))
    result = CliRunner().invoke(app, ["report", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    for name in ("per_turn_kl.png", "per_turn_success.png", "learning_curves.png", "report.md"):
        assert (tmp_path / "run" / name).stat().st_size > 100
    assert "teacher/reverse_kl" in (tmp_path / "run" / "report.md").read_text()


def test_every_learner_option_reaches_the_learner():
    # Each OptimConfig field is set from the TrainConfig field of the same name (a positional
    # mapping once sent --autocast into `pack` and --no-pack into `autocast`).
    from agentopd.training.learner import OptimConfig

    changed = dict(lr=3e-4, weight_decay=0.1, warmup_steps=2, schedule="cosine", grad_clip=0.5,
                   max_tokens_per_micro=123, pack=False, autocast="bf16", grad_checkpointing=True)
    assert set(changed) == {f.name for f in dataclasses.fields(OptimConfig)}
    assert all(getattr(OptimConfig(), k) != v for k, v in changed.items())
    assert TrainConfig(**changed).optim_config() == OptimConfig(**changed)
