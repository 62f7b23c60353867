"""The GPU check script runs (on the CPU, a tiny shape) with only torch and transformers: it must
not need agentopd's package `__init__` (gymnasium is absent on the GPU machine)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_smoke_on_cpu(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path / "tok")
    # -S -I-like isolation is not possible (torch lives in site-packages); block gymnasium instead
    code = ("import sys; sys.modules['gymnasium'] = None; sys.argv = sys.argv[1:]; "
            "import runpy; runpy.run_path(sys.argv[0], run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu",
                        "--shape", "tiny", "--prompt-tokens", "16", "--new-tokens", "4", "--batches", "1,2",
                        "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert res["rollout"]["2"]["new_tokens"] == 8  # forced full length: 2 rows x 4 tokens
    assert res["learner"]["loss_finite"] and res["teacher_score_tok_s"] > 0 and res["floor_prefill_tok_s"] > 0
