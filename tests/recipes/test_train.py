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
from transformers import AutoModelForCausalLM

from agentopd.core.config import load_config
from agentopd.recipes import TrainConfig
from agentopd.recipes import train as main
from agentopd.recipes.common import train_env_factory


def _cfg(tiny_dir, out, **kw):
    base = dict(student=f"hf:{tiny_dir}", steps=2, episodes_per_step=2, out=str(out), max_new_tokens=8,
                eval_every=2, eval_n=2, ckpt_every=1, max_context_tokens=2048, warm_start_steps=0)
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
           "--warm-start-steps", "0", "--out", str(run)]
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
    stage = dict(stage_steps=3, stage_lr=2e-4)  # the warm start's stage, under TrainConfig's names
    assert set(changed) | set(stage) == {f.name for f in dataclasses.fields(OptimConfig)}
    assert all(getattr(OptimConfig(), k) != v for k, v in (changed | stage).items())
    got = TrainConfig(**changed, warm_start_steps=3, warm_start_lr=2e-4).optim_config()
    assert got == OptimConfig(**changed, **stage)


def test_device_defaults_resolve_before_the_learner():
    """0 tokens per micro-batch and autocast auto resolve from the device and --dtype."""
    cpu = TrainConfig(dtype="float32").optim_config()
    assert cpu.max_tokens_per_micro == 2048 and cpu.autocast == "none"
    assert TrainConfig(device="cuda", dtype="float32").micro_tokens() == 8192
    assert TrainConfig(dtype="bfloat16").optim_config().autocast == "bf16"
    assert TrainConfig(dtype="bfloat16", autocast="none").optim_config().autocast == "none"
