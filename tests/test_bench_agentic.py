"""benchmarks/agentic_methods.py: the comparisons, the statistics, and both subcommands on tiny inputs."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "agentic_methods", Path(__file__).resolve().parents[1] / "benchmarks" / "agentic_methods.py")
am = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(am)

CALL = '<tool_call>{"name": "calculator", "arguments": {"expression": "17 * 23"}}</tool_call>'


def test_compare():
    assert am.compare(CALL, CALL) == {"exact": True, "same_call": True, "same_decision": True}
    assert am.compare(CALL.replace('": "', '":"'), CALL) == {"exact": False, "same_call": True, "same_decision": True}
    assert am.compare("Answer:391 ", "Answer: 391")["same_call"]
    assert am.compare("It is 391", "Answer: 391") == {"exact": False, "same_call": False, "same_decision": True}
    assert am.compare("<tool_call>{bad</tool_call>", CALL)["same_call"] is False
    assert am.compare(CALL, "Answer: 391")["same_decision"] is False


def test_statistics():
    lo, hi = am.wilson(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    assert am.wilson(0, 10)[0] == 0.0 and round(am.wilson(0, 10)[1], 4) == 0.2775
    assert all(math.isnan(x) for x in am.wilson(0, 0))
    assert round(am.two_prop_z(60, 100, 40, 100), 3) == 2.828
    assert am.two_prop_z(10, 10, 5, 5) == 0.0
    assert am.pass_ci(0.55, 100) == "0.550 [0.45, 0.64]"  # Wilson at n = tasks, for a fractional pass@k too
    assert am.pass_ci(0.5, 0) == "0.500" and am.pass_ci(None, 100) == "-" and am.pass_ci(math.nan, 100) == "-"


def _episode(i: int, logp: float) -> dict:
    """A 12-token, two-turn episode (turn 0 = tokens 3..5, turn 1 = 8..10)."""
    mask = [0] * 12
    for p in (3, 4, 5, 8, 9, 10):
        mask[p] = 1
    return {"task_id": f"t{i}", "success": i % 2 == 0, "stop_reason": "done", "token_ids": [7 + i + j for j in range(12)],
            "loss_mask": mask, "logprobs": [logp * m for m in mask],
            "turns": [{"index": 0, "span": [3, 6]}, {"index": 1, "span": [8, 11]}]}


def _eval_dir(d: Path, success: float, k: int = 1, logp: float = 0.0) -> None:
    d.mkdir(parents=True)
    (d / "episodes.jsonl").write_text("".join(json.dumps(_episode(i, logp)) + "\n" for i in range(4)))
    m = {"eval/episodes": 4.0, "eval/infra_errors": 0.0, "eval/success": success, "stop/done": 1.0,
         "turn/0/on_track": 0.75, "turn/1/on_track": success, "eval/pass@1": success, f"eval/pass@{k}": success}
    (d / "summary.json").write_text(json.dumps({"config": {"k": k, "n": 4}, "metrics": m}))


def test_summarize(tmp_path, tiny_dir):
    root = tmp_path / "calc"
    _eval_dir(root / "teacher" / "eval", 1.0)
    _eval_dir(root / "warm" / "eval", 0.25)
    _eval_dir(root / "warm" / "eval_k4", 0.5, k=4, logp=-0.5)
    _eval_dir(root / "sft-seed0" / "eval", 0.5)
    _eval_dir(root / "gkd-seed0" / "eval", 0.75)
    _eval_dir(root / "gkd-seed0" / "eval_k8", 0.5, k=8)
    (root / "gkd-seed0" / "eval_k8" / "episodes.jsonl").unlink()  # T=1 episodes gone before they were scored
    (root / "reverse_kl_pg-seed0").mkdir()
    (root / "times.txt").write_text("sft seed=0 wall_s=9 cpu_user_s=100 cpu_sys_s=20 max_rss_kb=2048000\n"
                                    f"eval {root}/sft-seed0 wall_s=9 cpu_user_s=50 cpu_sys_s=10 max_rss_kb=1024\n"
                                    f"eval@4 {root}/sft-seed0 wall_s=9 cpu_user_s=25 cpu_sys_s=5 max_rss_kb=1024\n"
                                    "warm (remade) wall_s=9 cpu_user_s=999 cpu_sys_s=0 max_rss_kb=1024\n"
                                    "Command exited with non-zero status 1\n")
    am.main(["summarize", "--root", str(root), "--teacher", str(tiny_dir)])
    text = (root / "summary.md").read_text()
    assert "| sft-seed0 | sft | 0 | 0.500 [0.150, 0.850] | 4 | 0.75 | 0.50 |" in text
    assert "| reverse_kl_pg-seed0 | reverse_kl_pg | 0 | pending |" in text and "| base | base | - | pending |" in text
    assert "| 3.0 | 0.5 | 2000 |" in text  # (120 + 60) CPU seconds, the pass@4 eval's 30, peak RSS
    warm = next(x for x in text.splitlines() if x.startswith("| warm | warm | - | 0.250"))
    assert warm.endswith("| - | - | - |")  # "warm (remade)": a model made again costs its run nothing
    assert "| sft | 1/1 | 0.500 | - | 0.500 [" in text  # one seed: no spread
    assert (root / "per_turn_success.png").exists() and (root / "per_turn_kl.png").exists()
    kl = json.loads((root / "warm" / "eval_k4" / "teacher_kl.json").read_text())
    assert kl["kind"] == "kl" and [c for _, c in kl["turns"].values()] == [12, 12]

    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    want = {0: 0.0, 1: 0.0}
    for i in range(4):
        e = _episode(i, -0.5)
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([e["token_ids"]])).logits[0].float(), -1)
        for t, span in ((0, range(3, 6)), (1, range(8, 11))):
            want[t] += sum(-0.5 - lp[p - 1, e["token_ids"][p]].item() for p in span) / 12
    assert kl["turns"]["0"][0] == pytest.approx(want[0], abs=1e-4)
    assert kl["turns"]["1"][0] == pytest.approx(want[1], abs=1e-4)
    nll = json.loads((root / "sft-seed0" / "eval" / "teacher_kl.json").read_text())
    assert nll["kind"] == "nll"
    gkd = next(x for x in text.splitlines() if x.startswith("| gkd-seed0 | teacher NLL (greedy) | eval |"))
    assert gkd.count("(12)") == 2  # the greedy episodes' NLL stands in for the lost T=1 KL
    assert "| 0.500 [0.15, 0.85] | - | 0.500 [0.15, 0.85] |" in text  # gkd's pass@1 and pass@8 over 4 tasks
    assert "| warm | 1/1 | 0.250 | - | 0.250 [0.046, 0.699] | 4 | -0.250 (-0.73) | pending | 0.500 | 0.500 | - |" in text


def test_summarize_refs_and_diagnostics(tmp_path):
    """Runs in one root, base/warm/teacher in another (--refs); Table 5 averages each run's
    loss/ diagnostics over its steps and leaves out the columns no run logs."""
    refs, root = tmp_path / "agentic" / "calc", tmp_path / "families" / "calc"
    _eval_dir(refs / "warm" / "eval", 0.25)
    _eval_dir(root / "akl-seed0" / "eval", 0.5)
    steps = [{"step": s, "loss/n_tokens": 100.0 * (s + 1), "loss/head_weight": 0.2 * (s + 1),
              "loss/teacher_entropy": 1.0} for s in range(2)]
    (root / "akl-seed0" / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in steps) + "\n")
    (refs / "times.txt").write_text("warm wall_s=9 cpu_user_s=60 cpu_sys_s=0 max_rss_kb=1024\n")
    am.main(["summarize", "--root", str(root), "--refs", str(refs), "--teacher", str(tmp_path / "none")])
    text = (root / "summary.md").read_text()
    assert "| warm | warm | - | 0.250 [" in text and "| akl-seed0 | akl | 0 | 0.500 [" in text
    assert "| 1.0 | - | 1 |" in text  # the warm run's CPU minutes and RSS, from REFS/times.txt
    assert "| run | steps | head_weight | teacher_entropy | n_tokens |" in text
    assert "| akl-seed0 | 2 | 0.300 | 1.000 | 150 |" in text


def test_check_teacher(tmp_path, tiny_dir):
    out = tmp_path / "check.json"
    am.main(["check-teacher", "--env", "agentopd/Calc-v0", "--teacher", str(tiny_dir), "--student", str(tiny_dir),
             "--out", str(out), "--n", "2", "--max-new-tokens", "4", "--max-turns", "2", "--dtype", "float32"])
    r = json.loads(out.read_text())
    assert r["tasks"] == 2 and r["overall"]["n"] == r["states"] > 0
    assert sum(v["n"] for v in r["per_turn"].values()) == r["states"]
    assert all(0 <= v <= 1 for k, v in r["overall"].items() if k != "n")
