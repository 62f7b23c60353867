"""Capability matching before anything loads, and the teacher running once per GKD step."""

import pytest
from helpers_models import tiny_model_from
from typer.testing import CliRunner

from agentopd.cli import app
from agentopd.core.capabilities import Signal, expand
from agentopd.recipes import LOSSES, TrainConfig
from agentopd.recipes import train as run_train
from agentopd.teachers.factory import KINDS, teacher_kind


@pytest.mark.parametrize("teacher, loss, names", [
    ("oracle", "reverse_kl_pg", ["needs teacher logprobs", "--teacher self or hf:<model>", "--loss sft or dagger"]),
    ("oracle", "gkd", ["full_logits", "--teacher self or hf:<model>"]),
    ("self", "dagger", ["text relabels", "--teacher oracle", "--loss reverse_kl_pg or gkd"]),
    ("hf:/no/such/model", "dagger", ["text relabels", "--teacher oracle", "--loss reverse_kl_pg or gkd or sft"]),
    ("self", "sft", ["demonstrations", "--teacher oracle or hf:<model>"]),
])
def test_a_method_the_teacher_cannot_serve_is_a_one_line_error_naming_what_works(teacher, loss, names):
    with pytest.raises(ValueError) as e:
        TrainConfig(teacher=teacher, loss=loss).validate()  # an hf path that does not exist: nothing loads
    msg = str(e.value)
    assert "\n" not in msg
    for n in names:
        assert n in msg, msg


def test_topk_gkd_needs_topk_and_every_kind_declares_what_it_gives():
    assert TrainConfig(loss="gkd", gkd_topk=5).needs() == Signal.TOPK_LOGPROBS
    assert TrainConfig(loss="gkd").needs() == Signal.FULL_LOGITS
    assert Signal.TOPK_LOGPROBS in expand(KINDS["hf"].gives) and Signal.TEXT not in expand(KINDS["self"].gives)
    with pytest.raises(ValueError, match="unknown teacher"):
        teacher_kind("gpt-9")
    # every loss has at least one teacher kind that serves it
    for loss in LOSSES:
        assert any(TrainConfig(loss=loss).needs() in expand(k.gives) for k in KINDS.values())


def test_the_cli_prints_one_line_and_exits_2():
    result = CliRunner().invoke(app, ["train", "--teacher", "oracle", "--loss", "gkd"])
    assert result.exit_code == 2
    assert "error:" in result.output and "Traceback" not in result.output


def test_gkd_calls_the_teacher_once_per_step(tmp_path, tokenizer, monkeypatch):
    import agentopd.teachers.local as local

    dirs = []
    for seed in (0, 1):
        d = tmp_path / f"m{seed}"
        tiny_model_from(tokenizer, seed=seed).save_pretrained(d)
        tokenizer.save_pretrained(d)
        dirs.append(d)
    calls = []
    real = local.logits_at
    monkeypatch.setattr(local, "logits_at", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = TrainConfig(student=f"hf:{dirs[0]}", teacher=f"hf:{dirs[1]}", loss="gkd", steps=2, episodes_per_step=2,
                      max_new_tokens=8, eval_every=0, ckpt_every=2, out=str(tmp_path / "run"),
                      max_context_tokens=2048, warm_start_steps=0)
    last = run_train(cfg)
    assert "loss/jsd" in last
    assert len(calls) == 2  # one scoring forward per step; the learner reads its log-probs
