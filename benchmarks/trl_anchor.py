"""Seconds per training step: TRL's `GKDTrainer` against `agentopd train --loss gkd`, same job.

Why: an anchor for agentopd's step times. The job is the one TRL's GKD recipe runs: fully
on-policy (lambda 1), JSD beta 0.5, temperature 0.9, 8 prompts per step, 32 new tokens, student
and teacher both SmolLM2-135M-Instruct in fp32 on CPU (bf16=False: TRL defaults to bf16 mixed precision), TRL's defaults otherwise. The prompts are
calc's first turns (system prompt + first user message of `agentopd/Calc-v0` at reset), and TRL
gets, step by step, exactly the tasks agentopd samples (`UniformTasks`, seed 0), rendered by the
same chat template. agentopd runs one turn per episode (`--max-turns 1`) with no held-out eval.

What is timed: TRL from `on_step_begin` to `on_step_end` (generate + student/teacher forwards +
backward + optimizer; the batch collation just before is not in it), and each `generate` call
on its own; agentopd's step is rollout + teacher relabel + learner (`time/*_s` in metrics.jsonl).
The first step of each carries warm-up; the summary also gives the mean of the later steps.

TRL is a benchmark-only dependency: it goes into benchmarks/.venv-trl, a venv that sees this
project's venv through a .pth file (so torch/transformers are the same builds) and holds only
trl and what it adds (datasets, pandas, pyarrow, ...). The TRL side runs in that venv as a
subprocess of this script (`--worker`).

    .venv/bin/python benchmarks/trl_anchor.py --steps 2 --out benchmarks/out/trl_anchor
    .venv/bin/python benchmarks/trl_anchor.py --model /tmp/tiny --steps 1 --out /tmp/anchor  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRL_VENV = ROOT / "benchmarks" / ".venv-trl"
TRL_VERSION = "1.16.0"
ENV_ID, SEED, BATCH, NEW_TOKENS, BETA, TEMPERATURE = "agentopd/Calc-v0", 0, 8, 32, 0.5, 0.9


def calc_prompts(steps: int) -> list[list[dict]]:
    """First-turn messages of the tasks agentopd's run samples, in step order."""
    from agentopd.envs.registry import env_attr, make_env
    from agentopd.rollout.tasks import UniformTasks

    env = make_env(ENV_ID, split="train", max_episode_steps=1)
    tasks = UniformTasks([t.id for t in env_attr(env, "tasks")], SEED)
    prompts = []
    for step in range(steps):
        batch = tasks.sample(step, BATCH)
        for task_id, seed in zip(batch.task_ids, batch.seeds):
            obs, _ = env.reset(seed=seed, options={"task": task_id})
            prompts.append(obs)
    return prompts


# ---- the TRL side (runs inside benchmarks/.venv-trl) ----------------------------------------
def trl_worker(model_path: str, steps: int, out: Path) -> None:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # GKD lives in trl.experimental in 1.x
    import torch
    import trl
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    step_s, generate_s, completion_tokens = [], [], []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            step_s.append(time.perf_counter() - self.t0)

    class InOrder(GKDTrainer):  # batch k = agentopd's step-k tasks (the default sampler shuffles)
        def _get_train_sampler(self, *args, **kw):
            return SequentialSampler(self.train_dataset)

    tok = AutoTokenizer.from_pretrained(model_path)
    student = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    teacher = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    generate = student.generate

    def timed_generate(*args, **kw):
        t0 = time.perf_counter()
        result = generate(*args, **kw)
        generate_s.append(time.perf_counter() - t0)
        completion_tokens.append(int(result.sequences.shape[1] - kw["input_ids"].shape[1]))
        return result

    student.generate = timed_generate
    # The assistant turn is a placeholder: with lambda 1 every step replaces it by a sample.
    rows = [{"messages": [*p, {"role": "assistant", "content": ""}]} for p in calc_prompts(steps)]
    args = GKDConfig(output_dir=str(out / "trl"), max_steps=steps, per_device_train_batch_size=BATCH,
                     lmbda=1.0, beta=BETA, temperature=TEMPERATURE, max_new_tokens=NEW_TOKENS,
                     use_cpu=True, report_to="none", save_strategy="no",
                     # fp32 as the job says: TRL defaults to bf16 mixed precision, which on a CPU
                     # without bf16 units ran over 25 min without finishing one step here
                     bf16=False)
    trainer = InOrder(model=student, teacher_model=teacher, args=args, processing_class=tok,
                      train_dataset=Dataset.from_list(rows), callbacks=[StepTimer()])
    trainer.train()
    import datasets

    (out / "trl.json").write_text(json.dumps({
        "step_s": step_s, "generate_s": generate_s, "generate_width": completion_tokens,
        "versions": {"trl": trl.__version__, "datasets": datasets.__version__},
    }, indent=2))


def ensure_trl_venv() -> Path:
    """benchmarks/.venv-trl with trl installed, seeing this venv's packages; made on first use."""
    py = TRL_VENV / "bin" / "python"
    check = f"import trl; assert trl.__version__ == {TRL_VERSION!r}"
    if py.exists() and subprocess.run([py, "-c", check], capture_output=True).returncode == 0:
        return py
    print(f"installing trl=={TRL_VERSION} into {TRL_VENV.relative_to(ROOT)} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", TRL_VENV], check=True)
    site = subprocess.check_output([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   text=True).strip()
    # addsitedir (not a bare path line) so the parent's own .pth files, agentopd's editable install
    # among them, are processed too; it appends, so what the TRL venv installs takes precedence.
    parent = sysconfig.get_paths()["purelib"]
    Path(site, "_agentopd_parent.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    subprocess.run([py, "-m", "pip", "install", "-q", f"trl=={TRL_VERSION}"], check=True)
    return py


# ---- the orchestrator (runs in the project's venv) -------------------------------------------
def run_logged(cmd: list, log: Path) -> float:
    print(f"$ {' '.join(map(str, cmd))}\n  (log: {log})", flush=True)
    t0 = time.perf_counter()
    with log.open("w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    if rc != 0:
        sys.exit(f"failed (exit {rc}); last lines of {log}:\n" + "".join(log.read_text().splitlines(True)[-30:]))
    return time.perf_counter() - t0


def agentopd_steps(model: str, steps: int, out: Path) -> tuple[list[dict], float]:
    run_dir = out / "agentopd"
    shutil.rmtree(run_dir, ignore_errors=True)
    spec = f"hf:{model}"
    cmd = [sys.executable, "-m", "agentopd.cli", "train", "--env", ENV_ID, "--loss", "gkd",
           "--student", spec, "--teacher", spec, "--steps", steps, "--episodes-per-step", BATCH,
           "--max-new-tokens", NEW_TOKENS, "--max-turns", 1, "--temperature", TEMPERATURE,
           "--gkd-beta", BETA, "--gkd-temperature", TEMPERATURE, "--gkd-lambda", 1.0,
           "--eval-every", 0, "--no-eval-at-start", "--warm-start-steps", 0, "--lr", 5e-5, "--seed", SEED, "--device", "cpu", "--out", run_dir]
    wall = run_logged([str(c) for c in cmd], out / "agentopd.log")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    keys = ("time/rollout_s", "time/teacher_s", "time/learner_s")
    return [{"step_s": sum(r[k] for k in keys), **{k.split("/")[1]: r[k] for k in keys}} for r in rows], wall


def machine() -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "?")
    import torch
    return {"cpu": model, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(), "platform": platform.platform()}


def versions() -> dict:
    from importlib.metadata import version
    return {"python": platform.python_version(),
            **{p: version(p) for p in ("torch", "transformers", "accelerate", "agentopd")}}


def mean_after_first(xs: list[float]) -> float:
    return statistics.mean(xs[1:] if len(xs) > 1 else xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "trl_anchor")
    ap.add_argument("--model", default="smollm2-135m", help="student and teacher (a local directory)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if a.worker:
        return trl_worker(a.model, a.steps, out)
    from agentopd.inference.models import resolve_path

    model = resolve_path(a.model)
    py = ensure_trl_venv()
    trl_wall = run_logged([str(py), __file__, "--worker", "--model", model, "--steps", str(a.steps),
                           "--out", str(out)], out / "trl.log")
    trl = json.loads((out / "trl.json").read_text())
    ours, ours_wall = agentopd_steps(model, a.steps, out)
    result = {
        "job": {"env": ENV_ID, "steps": a.steps, "batch": BATCH, "max_new_tokens": NEW_TOKENS, "lmbda": 1.0,
                "beta": BETA, "temperature": TEMPERATURE, "model": a.model, "model_path": model, "dtype": "float32",
                "device": "cpu"},
        "machine": machine(), "versions": versions() | trl.pop("versions"),
        "trl": trl | {"process_wall_s": trl_wall},
        "agentopd": {"step_s": [r["step_s"] for r in ours], "steps": ours, "process_wall_s": ours_wall},
    }
    t, o = result["trl"]["step_s"], result["agentopd"]["step_s"]
    result["summary"] = {"trl_step_s": mean_after_first(t), "agentopd_step_s": mean_after_first(o),
                         "trl_over_agentopd": mean_after_first(t) / mean_after_first(o)}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    m = result["machine"]
    print(f"\n{m['cpu']}, {m['usable_cores']} usable cores, torch {result['versions']['torch']}, "
          f"transformers {result['versions']['transformers']}, trl {result['versions']['trl']}")
    print(f"{'step':>4} {'TRL s':>8} {'(generate)':>10} {'agentopd s':>10} {'(rollout)':>9}")
    for i, (ts, os_) in enumerate(zip(t, o)):
        gen = trl["generate_s"][i] if i < len(trl["generate_s"]) else float("nan")
        print(f"{i + 1:>4} {ts:>8.2f} {gen:>10.2f} {os_:>10.2f} {ours[i]['rollout_s']:>9.2f}")
    s = result["summary"]
    print(f"mean{' (steps 2+)' if a.steps > 1 else ''}: TRL {s['trl_step_s']:.2f} s, agentopd "
          f"{s['agentopd_step_s']:.2f} s, TRL/agentopd {s['trl_over_agentopd']:.2f}x  -> {out / 'result.json'}")


if __name__ == "__main__":
    main()
