"""Served models for real: `agentopd serve` on 127.0.0.1 over a tiny transformers model, the
client's retries / budget / cache / concurrency against injected faults, the logprob and
black-box teachers, capability negotiation, a training run that stops cleanly and resumes from
the cache, and an eval of a served student."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("openai")

from agentopd.core.capabilities import Signal, SignalRequest  # noqa: E402
from agentopd.inference.openai_client import (  # noqa: E402
    Budget,
    BudgetExceeded,
    ServedClient,
    ServerRefused,
    ServerUnavailable,
)
from agentopd.teachers.base import TeacherError  # noqa: E402
from agentopd.teachers.served import ServedTeacher  # noqa: E402

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def server(tiny_dir):
    """`agentopd serve` in its own process (fp32, fault injection on); yields its /v1 url."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "agentopd.cli", "serve", "--model", f"hf:{tiny_dir}",
                             "--port", str(port), "--dtype", "float32", "--allow-faults", "--max-logprobs", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{base}/v1/models", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"agentopd serve exited: {proc.stdout.read().decode()[-2000:]}") from None
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("agentopd serve did not start in 120 s")
    yield f"{base}/v1"
    proc.terminate()
    proc.wait(10)


@pytest.fixture()
def faults(server):
    """Script the server's next replies (and what it offers); reset after each test."""
    root = server.removesuffix("/v1")

    def plan(*names: str, offers=None, slow_s: float | None = None) -> dict:
        body: dict = {"faults": list(names)}
        if offers is not None:
            body["offers"] = list(offers)
        if slow_s is not None:
            body["slow_s"] = slow_s
        return _post(f"{root}/admin/faults", body)

    yield plan
    plan()


def _client(server, tiny_dir, **kw) -> ServedClient:
    kw = {"timeout_s": 10.0, "max_retries": 3, "backoff_s": 0.05, "max_backoff_s": 0.2} | kw
    return ServedClient(server, str(tiny_dir), **kw)


@pytest.fixture(scope="module")
def episodes(tokenizer):
    """Two real calc episodes played by the env's oracle (their turns are loss-masked targets)."""
    from agentopd.envs.registry import make_env
    from agentopd.rollout.oracle import OraclePolicy
    from agentopd.rollout.runner import RolloutConfig, run_episodes

    return run_episodes(lambda: make_env("agentopd/Calc-v0", split="train"), OraclePolicy(), [0, 1], [0, 1],
                        RolloutConfig(), "agentopd/Calc-v0", tokenizer=tokenizer)


def test_prompt_logprob_teacher_matches_the_same_model_in_process(server, tiny_dir, tiny_model, tokenizer, episodes):
    from agentopd.teachers.local import HFTeacher

    teacher = ServedTeacher(_client(server, tiny_dir), tokenizer)
    caps = teacher.negotiate(Signal.TOPK_LOGPROBS, topk=5)
    assert caps.prompt_logprobs and caps.completions and caps.chat and caps.tokenize
    request = SignalRequest(Signal.TOPK_LOGPROBS, topk=5)
    served = teacher.relabel(episodes, request)
    local = HFTeacher(tiny_model, tokenizer, tokenizer).relabel(episodes, request)
    assert len(served) == len(local) == 2
    for s, h in zip(served, local):
        assert s.input_ids == h.input_ids and s.loss_mask == h.loss_mask
        targets = [q for q in range(1, len(s.input_ids)) if s.loss_mask[q]]
        assert targets
        for q in targets:
            assert s.signal.token_logp[q] == pytest.approx(h.signal.token_logp[q], abs=1e-3)
        assert [s.signal.top1[q] for q in targets] == [h.signal.top1[q] for q in targets]
        assert s.signal.topk_ids == h.signal.topk_ids
        for a, b in zip(s.signal.topk_logp, h.signal.topk_logp):
            assert a == pytest.approx(b, abs=1e-3)
    m = teacher.metrics()
    assert m["teacher/requests"] >= 2 and m["teacher/prompt_tokens"] > 0


def test_probe_finds_the_top_k_limit_and_refuses_a_larger_request(server, tiny_dir, tokenizer):
    client = _client(server, tiny_dir)
    caps = client.probe(tokenizer.encode("hi there", add_special_tokens=False), want_topk=50)
    assert caps.max_topk == 20 and caps.prompt_logprobs
    with pytest.raises(TeacherError, match="at most 20 prompt logprobs"):
        ServedTeacher(client, tokenizer).negotiate(Signal.TOPK_LOGPROBS, topk=50)
    with pytest.raises(TeacherError, match="temperature 1"):
        ServedTeacher(client, tokenizer).negotiate(Signal.TOPK_LOGPROBS, topk=5, temperature=0.9)


def test_a_different_tokenizer_is_refused(server, tiny_dir, tokenizer):
    from transformers import AutoTokenizer

    other = AutoTokenizer.from_pretrained(str(tiny_dir))
    other.add_special_tokens({"additional_special_tokens": ["<tool_call>", "</tool_call>"]})
    with pytest.raises(TeacherError, match="tokenizer .* differs from the student's"):
        ServedTeacher(_client(server, tiny_dir), other).negotiate(Signal.SAMPLED_LOGPROBS)


def test_a_chat_only_server_gives_text_relabels_and_refuses_logprob_losses(server, tiny_dir, tokenizer, episodes,
                                                                           faults):
    faults(offers=["chat"])
    teacher = ServedTeacher(_client(server, tiny_dir), tokenizer, max_new_tokens=8)
    with pytest.raises(TeacherError, match="no prompt logprobs .chat only.*--loss dagger"):
        teacher.negotiate(Signal.SAMPLED_LOGPROBS)
    caps = teacher.negotiate(Signal.TEXT)
    assert caps.chat and not caps.completions and not caps.prompt_logprobs
    rows = teacher.relabel(episodes, SignalRequest(Signal.TEXT))
    n_turns = sum(len(e.turns) for e in episodes)
    assert len(rows) == n_turns
    for row, (ep, t) in zip(rows, [(e, t) for e in episodes for t in e.turns]):
        assert row.input_ids[: t.start] == ep.token_ids[: t.start]  # the student's own state
        assert row.input_ids[-1] == tokenizer.eos_token_id and sum(row.loss_mask) >= 1
    with pytest.raises(TeacherError, match="cannot give sampled_logprobs"):
        teacher.relabel(episodes, SignalRequest(Signal.SAMPLED_LOGPROBS))


def test_completions_without_prompt_logprobs_is_a_text_teacher(server, tiny_dir, tokenizer, faults):
    faults(offers=["completions", "chat"])
    teacher = ServedTeacher(_client(server, tiny_dir), tokenizer)
    with pytest.raises(TeacherError, match="completions without prompt_logprobs"):
        teacher.negotiate(Signal.SAMPLED_LOGPROBS)
    assert teacher.negotiate(Signal.TEXT).completions


def test_retries_honour_retry_after_and_recover(server, tiny_dir, faults):
    client = _client(server, tiny_dir)
    faults("429")
    t0 = time.perf_counter()
    choice = client.completion([1, 2, 3], 2, temperature=0.0)
    assert time.perf_counter() - t0 >= 1.0  # the server said Retry-After: 1
    assert choice["text"] is not None and client.counts["retries"] == 1
    faults("500", "malformed", "500")
    client.completion([1, 2, 3, 4], 2, temperature=0.0)
    assert client.counts["retries"] == 4 and client.counts["errors"] == 0


def test_a_reply_slower_than_the_timeout_is_retried(server, tiny_dir, faults):
    faults("slow", slow_s=3.0)
    client = _client(server, tiny_dir, timeout_s=1.0)
    client.completion([5, 6, 7], 1, temperature=0.0)
    assert client.counts["retries"] == 1


def test_a_server_that_stops_answering_raises_after_the_retries(server, tiny_dir, faults):
    faults("down")
    client = _client(server, tiny_dir, max_retries=2)
    with pytest.raises(ServerUnavailable, match="answered 503 3 times"):
        client.completion([1, 2], 1, temperature=0.0)
    assert client.counts["retries"] == 2 and client.counts["errors"] == 1


def test_a_bad_request_is_refused_at_once(server, tiny_dir):
    client = _client(server, tiny_dir)
    with pytest.raises(ServerRefused, match="400"):
        client.completion([1, 2], 1, prompt_logprobs=-1)
    with pytest.raises(ServerRefused, match="does not exist"):
        ServedClient(server, "no-such-model").completion([1, 2], 1)
    assert client.counts["retries"] == 0


def test_budget_cost_and_concurrency(server, tiny_dir):
    from concurrent.futures import ThreadPoolExecutor

    client = _client(server, tiny_dir, budget=Budget(max_requests=3, price_in=2.0, price_out=10.0), concurrency=2)
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda i: client.completion([1, 2, 3 + i], 2, temperature=0.0), range(3)))
    m = client.metrics()
    assert m["teacher/requests"] == 3 and 1 <= m["teacher/peak_in_flight"] <= 2
    assert m["teacher/cost_usd"] == pytest.approx((9 * 2.0 + m["teacher/completion_tokens"] * 10.0) / 1e6)
    with pytest.raises(BudgetExceeded, match="3 requests"):
        client.completion([9, 9], 1)


def test_the_cache_answers_the_same_request_again_across_clients(server, tiny_dir, tmp_path):
    path = tmp_path / "cache.sqlite"
    a = _client(server, tiny_dir, cache_path=path)
    first = a.completion([3, 1, 4, 1], 3, temperature=0.0, prompt_logprobs=2)
    b = _client(server, tiny_dir, cache_path=path)  # a resumed run
    again = b.completion([3, 1, 4, 1], 3, temperature=0.0, prompt_logprobs=2)
    assert again == first and b.counts["requests"] == 0 and b.counts["cache_hits"] == 1
    b.completion([3, 1, 4, 2], 3, temperature=0.0)  # another request is not a hit
    assert b.counts["requests"] == 1


def _train(out, server, tiny_dir, *extra):
    from typer.testing import CliRunner

    from agentopd.cli import app

    args = ["train", "--student", f"hf:{tiny_dir}", "--teacher", f"openai:{tiny_dir}@{server}",
            "--loss", "reverse_kl_pg", "--episodes-per-step", "2", "--max-turns", "1", "--max-new-tokens", "8",
            "--warm-start-steps", "0", "--eval-every", "0", "--ckpt-every", "1", "--dtype", "float32",
            "--teacher-max-retries", "1", "--out", str(out), *extra]
    return CliRunner().invoke(app, args)


def test_train_with_a_served_teacher_stops_cleanly_and_resumes_from_the_cache(server, tiny_dir, tmp_path):
    run = tmp_path / "run"
    # the probe takes 2 budgeted requests and each step 2 (one per episode): step 2 runs out
    r = _train(run, server, tiny_dir, "--steps", "2", "--teacher-max-requests", "5")
    assert r.exit_code == 2, r.output
    assert "the teacher stopped the run" in r.output and "--resume" in r.output and "Traceback" not in r.output
    assert (run / "latest").read_text().strip() == "step_1"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["teacher/requests"] == 4 and lines[0]["teacher/cost_usd"] == 0.0
    r = _train(run, server, tiny_dir, "--steps", "2", "--resume")
    assert r.exit_code == 0, r.output
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["teacher/cache_hits"] >= 1  # step 2's answered request was not paid again
    assert (run / "latest").read_text().strip() == "step_2"


def test_train_refuses_a_logprob_loss_against_a_chat_only_server_before_writing(server, tiny_dir, tmp_path, faults):
    faults(offers=["chat"])
    r = _train(tmp_path / "run", server, tiny_dir, "--steps", "1")
    assert r.exit_code == 2 and "--loss dagger" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "run").exists()


def test_eval_of_a_served_student_equals_the_in_process_model(server, tiny_dir, tmp_path):
    from typer.testing import CliRunner

    from agentopd.cli import app

    outs = {}
    for name, model in (("served", f"openai:{tiny_dir}@{server}"), ("local", f"hf:{tiny_dir}")):
        r = CliRunner().invoke(app, ["eval", "--env", "agentopd/Calc-v0", "--model", model, "--n", "3",
                                     "--max-new-tokens", "12", "--dtype", "float32", "--out", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
        outs[name] = [json.loads(x) for x in (tmp_path / name / "episodes.jsonl").read_text().splitlines()]
    assert [e["token_ids"] for e in outs["served"]] == [e["token_ids"] for e in outs["local"]]
    assert len(outs["served"]) == 3


def test_spec_errors_are_one_line():
    from agentopd.recipes import TrainConfig

    with pytest.raises(ValueError, match="needs a base url"):
        TrainConfig(teacher="openai:gpt").validate()
    with pytest.raises(ValueError, match="full_logits.*openai"):
        TrainConfig(teacher="openai:m@http://x/v1", loss="gkd").validate()
    with pytest.raises(ValueError, match="temperature 1"):
        TrainConfig(teacher="openai:m@http://x/v1", teacher_temperature=2.0).validate()
    TrainConfig(teacher="openai:m@http://x/v1", loss="gkd", gkd_topk=5).validate()
    TrainConfig(teacher="openai:m@http://x/v1", loss="dagger").validate()
    assert replace(TrainConfig(), teacher="openai:m@http://x/v1").needs() == Signal.SAMPLED_LOGPROBS


def test_structured_tool_calls_become_the_envs_call_text(tokenizer):
    from agentopd.inference.server import hermes_tool_calls
    from agentopd.tools.formats import FORMATS

    content, calls = hermes_tool_calls('Let me compute. <tool_call>{"name": "calculator", "arguments": '
                                       '{"expression": "2+2"}}</tool_call>')
    assert content == "Let me compute." and calls[0]["function"]["name"] == "calculator"
    assert json.loads(calls[0]["function"]["arguments"]) == {"expression": "2+2"}
    assert hermes_tool_calls("<tool_call>not json</tool_call>") == ("<tool_call>not json</tool_call>", [])
    teacher = ServedTeacher(ServedClient("http://127.0.0.1:9/v1", "m"), tokenizer)
    message = {"role": "assistant", "content": content, "tool_calls": calls}
    assert "<tool_call>" not in teacher.message_text(message)  # no format given: the content only
    for name, fmt in FORMATS.items():
        teacher.reply_text = fmt.openai_text
        text = teacher.message_text(message)
        (call,) = fmt.parse(text)  # the env of that format reads the call back
        assert (call.name, call.arguments, call.parse_error) == ("calculator", {"expression": "2+2"}, None), name



def test_loss_auto_picks_dagger_for_a_chat_only_server(server, tiny_dir, tmp_path, faults):
    faults(offers=["chat"])
    r = _train(tmp_path / "run", server, tiny_dir, "--steps", "1", "--loss", "auto", "--max-new-tokens", "4")
    assert r.exit_code == 0, r.output
    assert "--loss auto" in r.output and "dagger" in r.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["loss"] == "dagger"
