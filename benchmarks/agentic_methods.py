"""Analysis for the agentic-methods benchmark (benchmarks/agentic_methods.sh).

  check-teacher --env ENV --teacher DIR --student DIR --out FILE.json
      the teacher's greedy turns on the student's own (T=1) training states, against the oracle's.
  summarize --root ROOT [--teacher DIR]
      ROOT/summary.md: held-out success with 95% Wilson intervals, per-turn on-track, stop reasons,
      pass@k, CPU time, per-turn teacher KL; ROOT/per_turn_success.png and per_turn_kl.png.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

METHODS = ("sft", "reverse_kl_pg", "reverse_kl_pg_tau2", "gkd", "dagger", "tcod_f2b", "tcod_b2f", "tcod_kl", "skill_sd",
           "cold_reverse_kl_pg", "akl", "akl_top20", "todi", "todi_top20", "gkd_top20", "gopd", "eopd", "tip50", "tip20",
           "sdpo")
"""Known methods, in table order (others found under ROOT follow, by name)."""
REFS = ("base", "warm", "teacher")
BASELINES = ("sft", "reverse_kl_pg")
TURNS = 4  # on-track columns of Table 1
KL_TURNS = 6  # turn columns of the KL tables and plots
STOPS = ("done", "loop", "turn_limit")


def _norm(text: str) -> str:
    return " ".join(text.split())


def _answer(text: str) -> str | None:
    """The text after the last 'Answer:' (case-insensitive, whitespace-normalised), or None."""
    parts = re.split(r"answer:", text, flags=re.IGNORECASE)
    return _norm(parts[-1]) if len(parts) > 1 else None


def compare(text: str, oracle: str) -> dict[str, bool]:
    """How a turn's text agrees with the oracle's action for the same state: `exact` (same
    text up to whitespace), `same_call` (equal parsed tool names and arguments, or the same
    final answer), `same_decision` (both call a tool, or both answer without one)."""
    from agentopd.tools.core import parse_tool_calls

    a, b = ([("", c.raw) if c.parse_error else (c.name, json.dumps(c.arguments, sort_keys=True))
             for c in parse_tool_calls(x)] for x in (text, oracle))
    same = (a == b and all(name for name, _ in a)) if a and b else (
        not a and not b and _answer(text) is not None and _answer(text) == _answer(oracle))
    return {"exact": _norm(text) == _norm(oracle), "same_call": same, "same_decision": bool(a) == bool(b)}


def check_teacher(a: argparse.Namespace) -> dict:
    """Roll out the student on the first n training tasks (T=1, seed 0), let the teacher act
    greedily from each of its states, and score teacher and student against the oracle."""
    from agentopd.envs.registry import env_attr, make_env
    from agentopd.inference.hf import HFPolicy
    from agentopd.inference.sampling import SamplingParams
    from agentopd.rollout.runner import RolloutConfig, run_episodes
    from agentopd.teachers.base import same_tokenizer

    env = make_env(a.env, split="train")
    ids = [t.id for t in env_attr(env, "tasks")][: a.n]
    env.close()
    student = HFPolicy.from_spec(a.student, device=a.device, dtype=a.dtype)
    make = lambda: make_env(a.env, split="train", max_episode_steps=a.max_turns)  # noqa: E731
    rcfg = RolloutConfig(SamplingParams(a.max_new_tokens, 1.0, seed=0))
    eps = run_episodes(make, student, ids, list(range(len(ids))), rcfg, a.env)
    states = [(e, t) for e in eps for t in e.turns if not t.replayed and t.oracle_action is not None]
    teacher = HFPolicy.from_spec(a.teacher, device=a.device, dtype=a.dtype)
    if not same_tokenizer(teacher.tokenizer, student.tokenizer):
        raise SystemExit("teacher and student tokenizers differ: the student's states are token ids")
    del student
    samples = teacher.sample([e.token_ids[: t.start] for e, t in states],
                             SamplingParams(a.max_new_tokens, 0.0)) if states else []
    acc: dict = defaultdict(lambda: defaultdict(float))
    examples = []
    eos = teacher.tokenizer.eos_token_id
    for (e, t), s in zip(states, samples):
        toks = list(s.token_ids[:-1] if s.token_ids and s.token_ids[-1] == eos else s.token_ids)
        text = teacher.tokenizer.decode(toks, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        tc, sc = compare(text, t.oracle_action), compare(t.text, t.oracle_action)
        hits = {"n": 1, **{f"teacher_{k}": v for k, v in tc.items()}, **{f"student_{k}": v for k, v in sc.items()},
                "student_oracle_ok": bool(t.oracle_ok)}
        for key in ("all", str(t.index)):
            for k, v in hits.items():
                acc[key][k] += v
        if not tc["same_call"] and len(examples) < 8:
            examples.append({"task_id": e.task_id, "turn": t.index, "oracle": t.oracle_action,
                             "teacher": text, "student": t.text})
    rates = {k: {"n": int(r["n"]), **{m: v / r["n"] for m, v in r.items() if m != "n"}} for k, r in acc.items()}
    held = _json(Path(a.teacher).parent / "eval" / "summary.json")
    report = {"env": a.env, "teacher": a.teacher, "student": a.student, "tasks": len(ids), "max_turns": a.max_turns,
              "max_new_tokens": a.max_new_tokens, "student_success": sum(e.success for e in eps) / max(1, len(eps)),
              "states": len(states), "overall": rates.get("all", {"n": 0}),
              "per_turn": {k: rates[k] for k in sorted((k for k in rates if k != "all"), key=int)},
              "teacher_heldout_success": held["metrics"]["eval/success"] if held else None, "disagreements": examples}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2))
    print(f"student success on {len(ids)} training tasks: {report['student_success']:.3f}; teacher held-out "
          f"success: {report['teacher_heldout_success']}\n turn     n  T exact  T call  T decision  S oracle_ok")
    for k, r in [("all", report["overall"]), *report["per_turn"].items()] if states else []:
        print(f"{k:>5} {r['n']:>5} {r['teacher_exact']:>8.2f} {r['teacher_same_call']:>7.2f} "
              f"{r['teacher_same_decision']:>11.2f} {r['student_oracle_ok']:>12.2f}")
    return report


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of k successes in n trials (NaNs when n == 0)."""
    if n == 0:
        return math.nan, math.nan
    p, d = k / n, 1 + z * z / n
    c, h = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def two_prop_z(k1: int, n1: int, k2: int, n2: int) -> float:
    """The pooled two-proportion z statistic of p1 - p2 (n1, n2 > 0; 0 when both are 0 or 1)."""
    p = (k1 + k2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    return (k1 / n1 - k2 / n2) / se if se > 0 else 0.0


def _json(p: Path):
    return json.loads(p.read_text()) if p.exists() else None


def _f(x, fmt: str = ".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def discover(root: Path, refs: Path | None = None) -> list[dict]:
    """base / warm / teacher (under REFS, default ROOT), then every ``<method>-seed<k>``
    directory under ROOT."""
    runs = [{"name": r, "method": r, "seed": "-", "dir": (refs or root) / r} for r in REFS]
    found = [{"name": d.name, "method": m[1], "seed": int(m[2]), "dir": d} for d in (root.iterdir() if root.exists()
             else []) if d.is_dir() and (m := re.fullmatch(r"(.+)-seed(\d+)", d.name))]
    rank = {m: i for i, m in enumerate(METHODS)}
    return runs + sorted(found, key=lambda r: (rank.get(r["method"], len(rank)), r["method"], r["seed"]))


def load_eval(run: dict) -> None:
    """Attach the run's greedy held-out result (`ev`: n, k, metrics) and its pass@k evals."""
    s, run["ev"], run["passk"] = _json(run["dir"] / "eval" / "summary.json"), None, []
    if s is not None:
        m = s["metrics"]
        n = int(m["eval/episodes"] - m.get("eval/infra_errors", 0))
        run["ev"] = {"n": n, "k": round(m["eval/success"] * n) if n else 0, "m": m}
    for s in map(_json, sorted(run["dir"].glob("eval_k*/summary.json"))):
        k = int(s["config"].get("k", 1))
        run["passk"].append((k, s["metrics"].get("eval/pass@1"), s["metrics"].get(f"eval/pass@{k}"),
                             int(s["config"].get("n", 0))))


def pass_ci(p: float | None, tasks: int) -> str:
    """pass@k over `tasks` tasks with a conservative 95% interval: the Wilson interval of p at
    n = tasks. Each task's pass@k estimate lies in [0, 1], so its variance is at most p (1 - p):
    the binomial bound holds for the mean over tasks whatever the samples per task (exact for a
    task-level 0/1 score, wide for pass@1 over k samples, whose per-task scores vary less)."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "-"
    if tasks <= 0:  # an eval that did not record its task count
        return f"{p:.3f}"
    lo, hi = wilson(p * tasks, tasks)
    return f"{p:.3f} [{lo:.2f}, {hi:.2f}]"


def on_track(m: dict, t: int) -> float:
    """On track after turn t; past the longest episode every episode has ended: the success rate."""
    return m.get(f"turn/{t}/on_track", m["eval/success"])


def read_times(root: Path) -> dict[str, dict[str, float]]:
    """Run name -> CPU seconds (user + sys) of its training and greedy eval (`cpu_s`, resumes
    included) and of its pass@k evals (`passk_cpu_s`), and peak RSS (kB), from ROOT/times.txt."""
    p, out = root / "times.txt", defaultdict(lambda: {"cpu_s": 0.0, "passk_cpu_s": 0.0, "rss_kb": 0.0})
    pat = r"(.*?) wall_s=\S+ cpu_user_s=(\S+) cpu_sys_s=(\S+) max_rss_kb=(\d+)"
    for line in p.read_text(errors="replace").splitlines() if p.exists() else []:
        m = re.match(pat, line.strip())
        if not m:
            continue
        ev = re.fullmatch(r"eval(@\d+)? (.+)", m[1])
        name = Path(ev[2]).name if ev else m[1].replace(" seed=", "-seed")
        out[name]["passk_cpu_s" if ev and ev[1] else "cpu_s"] += float(m[2]) + float(m[3])
        out[name]["rss_kb"] = max(out[name]["rss_kb"], float(m[4]))
    return dict(out)


@lru_cache(maxsize=1)
def load_teacher(path: str, max_tokens: int = 2048):
    """The teacher as a logit scorer (loaded once, on first use)."""
    from agentopd.inference.models import load_causal_lm, load_tokenizer
    from agentopd.teachers.local import HFTeacher

    tok = load_tokenizer(path)
    return HFTeacher(load_causal_lm(path, dtype="float32"), tok, tok, max_tokens=max_tokens)


def heldout_kl(run: dict, teacher_dir: str | None) -> dict | None:
    """Per turn t: the mean of (logprob - teacher logp) over the student's tokens of turn t in
    the run's T=1 episodes (reverse KL estimate, ``kind: kl``), or the teacher's mean NLL of the
    student's greedy tokens (``kind: nll``) when only greedy episodes exist. Cached next to the
    episodes (teacher_kl.json), keyed by the file's size and mtime and the teacher. Episodes are
    not committed: without them, the committed cache is the result."""
    ks = sorted(run["dir"].glob("eval_k*/summary.json"))
    path, kind = (ks[-1].with_name("episodes.jsonl"), "kl") if ks else (run["dir"] / "eval" / "episodes.jsonl", "nll")
    if kind == "kl" and not path.exists() and not path.with_name("teacher_kl.json").exists():
        path, kind = run["dir"] / "eval" / "episodes.jsonl", "nll"  # T=1 episodes gone unscored: the greedy NLL
    cache = path.parent / "teacher_kl.json"
    if not path.exists():
        return _json(cache)
    st = path.stat()
    old = _json(cache)
    if teacher_dir is None or not Path(teacher_dir).exists():  # no teacher to score with: a cache of these episodes
        return old if old and old.get("stamp", "").startswith(f"{path.name}:{st.st_size}:{st.st_mtime_ns}:") else None
    stamp = f"{path.name}:{st.st_size}:{st.st_mtime_ns}:{Path(teacher_dir).resolve()}"
    if old and old.get("stamp") == stamp:
        return old
    from agentopd.core.rows import TrainRow

    teacher, rows = load_teacher(teacher_dir), []
    for e in map(json.loads, path.read_text().splitlines()):
        if e["stop_reason"] != "error":  # turn_of from the turns' spans
            turn_of = [-1] * len(e["token_ids"])
            for t in e["turns"]:
                turn_of[t["span"][0]:t["span"][1]] = [t["index"]] * (t["span"][1] - t["span"][0])
            rows.append(TrainRow(tuple(e["token_ids"]), tuple(e["loss_mask"]), tuple(e["logprobs"]), tuple(turn_of)))
    sums: dict[int, float] = defaultdict(float)
    counts: dict[int, int] = defaultdict(int)
    for i in range(0, len(rows), 8):  # a few rows at a time: only their teacher signals are alive
        for r in teacher.score(rows[i:i + 8]):
            for lp, tl, m, t in zip(r.old_logp, r.teacher_logp, r.loss_mask, r.turn_of):
                if m and t >= 0:
                    sums[t] += lp - tl if kind == "kl" else -tl
                    counts[t] += 1
    out = {"stamp": stamp, "kind": kind, "file": str(path),
           "turns": {str(t): [sums[t] / counts[t], counts[t]] for t in sorted(counts)}}
    cache.write_text(json.dumps(out, indent=1))
    return out


def _group(runs: list[dict]) -> dict[str, list[dict]]:
    """Runs by method, in table order."""
    return {m: [r for r in runs if r["method"] == m] for m in dict.fromkeys(r["method"] for r in runs)}


def md_table(head: list[str], rows: list[list]) -> list[str]:
    """A markdown table; short rows (pending runs) are padded with empty cells."""
    rows = [[str(c) for c in r] + [""] * (len(head) - len(r)) for r in rows]
    return ["| " + " | ".join(r) + " |" for r in [head, ["---"] * len(head), *rows]]


def table_runs(runs: list[dict], times: dict) -> list[str]:
    """Table 1: one row per run (pending when its greedy eval is missing)."""
    ks = sorted({k for r in runs for k, *_ in r["passk"] if k > 1})
    head = ["run", "method", "seed", "held-out success [95% CI]", "n", *(f"on track t{t}" for t in range(TURNS)),
            *(f"stop {s}" for s in STOPS), "pass@1 T=1", *(f"pass@{k} T=1" for k in ks), "CPU min", "pass@k CPU min", "peak RSS MB"]
    rows = []
    for r in runs:
        tm = times.get(r["name"], {})
        cost = [_f(tm.get("cpu_s", math.nan) / 60, ".1f"), _f(tm.get("passk_cpu_s", 0.0) / 60 or math.nan, ".1f"),
                _f(tm.get("rss_kb", math.nan) / 1024, ".0f")]
        if r["ev"] is None:
            rows.append([r["name"], r["method"], r["seed"], "pending", *[""] * (TURNS + len(STOPS) + 2 + len(ks)), *cost])
            continue
        n, k, m = r["ev"]["n"], r["ev"]["k"], r["ev"]["m"]
        lo, hi = wilson(k, n)
        pk = {kk: (p1, pkk, nt) for kk, p1, pkk, nt in r["passk"]}
        rows.append([r["name"], r["method"], r["seed"], f"{_f(k / n if n else math.nan)} [{_f(lo)}, {_f(hi)}]", n,
                     *(f"{on_track(m, t):.2f}" for t in range(TURNS)), *(f"{m.get(f'stop/{s}', 0.0):.2f}" for s in STOPS),
                     pass_ci(*next(((v[0], v[2]) for v in pk.values()), (None, 0))),
                     *(pass_ci(*(pk[kk][1:] if kk in pk else (None, 0))) for kk in ks), *cost])
    return md_table(head, rows)


def table_methods(runs: list[dict]) -> list[str]:
    """Table 2: per method, mean success over seeds with the seeds' standard deviation (the
    spread a pooled interval does not show), the pooled 95% interval over all its episodes, the
    pooled difference to sft and to reverse_kl_pg (two-proportion z), and pass@1 / pass@k at
    temperature 1 averaged over the seeds that have them."""
    groups, pooled = _group(runs), {}
    ks = sorted({k for r in runs for k, *_ in r["passk"] if k > 1})
    for method, rs in groups.items():
        done = [r["ev"] for r in rs if r["ev"] is not None and r["ev"]["n"]]
        if done:
            rates = [e["k"] / e["n"] for e in done]
            mean = sum(rates) / len(rates)
            sd = math.sqrt(sum((x - mean) ** 2 for x in rates) / (len(rates) - 1)) if len(rates) > 1 else math.nan
            pooled[method] = (sum(e["k"] for e in done), sum(e["n"] for e in done), mean, len(done), sd)
    rows = []
    for method, rs in groups.items():
        if method not in pooled:
            rows.append([method, f"0/{len(rs)}", "pending"])
            continue
        k, n, mean, nd, sd = pooled[method]
        lo, hi = wilson(k, n)
        vs = ["-" if b == method else "pending" if b not in pooled else
              f"{k / n - pooled[b][0] / pooled[b][1]:+.3f} ({two_prop_z(k, n, *pooled[b][:2]):+.2f})" for b in BASELINES]
        pk = [(kk, p1, pkk) for r in rs for kk, p1, pkk, _ in r["passk"] if kk in ks]
        at = {kk: [p for k2, _, p in pk if k2 == kk] for kk in ks}  # each K's column: the runs evaluated at K
        pass_cols = [_f(sum(p[1] for p in pk) / len(pk)) if pk else "-",
                     *(_f(sum(at[kk]) / len(at[kk])) if at[kk] else "-" for kk in ks)]
        rows.append([method, f"{nd}/{len(rs)}", f"{mean:.3f}", _f(sd), f"{k / n:.3f} [{lo:.3f}, {hi:.3f}]", n, *vs,
                     *pass_cols])
    return md_table(["method", "runs done", "mean success", "sd over seeds", "pooled success [95% CI]", "episodes",
                     *(f"vs {b}: diff (z)" for b in BASELINES), "pass@1 T=1", *(f"pass@{k} T=1" for k in ks)], rows)


def table_kl(runs: list[dict]) -> list[str]:
    """Table 3: held-out per-turn teacher KL (or NLL) per run, 'mean (tokens)'."""
    def missing(r: dict) -> str:
        kept = (r["dir"] / "eval" / "episodes.jsonl").exists() or any(r["dir"].glob("eval_k*/episodes.jsonl"))
        return "pending" if r["ev"] is None or kept else "- (episodes not kept)"

    rows = [[r["name"], missing(r)] if not (kl := r.get("kl")) else
            [r["name"], "reverse KL (T=1)" if kl["kind"] == "kl" else "teacher NLL (greedy)", Path(kl["file"]).parent.name,
             *(f"{kl['turns'][str(t)][0]:.3f} ({kl['turns'][str(t)][1]})" if str(t) in kl["turns"] else "-"
               for t in range(KL_TURNS))] for r in runs]
    return md_table(["run", "signal", "episodes", *(f"turn {t}" for t in range(KL_TURNS))], rows)


def table_train_kl(runs: list[dict]) -> list[str]:
    """Table 4: per-turn teacher KL of the training rollouts (metrics.jsonl), first and last
    logged step."""
    def first_last(p: Path) -> list[dict]:
        rows = [json.loads(x) for x in p.read_text().splitlines() if x.strip()] if p.exists() else []
        rows = [r for r in rows if "turn/0/teacher_kl" in r]
        return rows[:1] + rows[-1:] if len(rows) > 1 else rows

    rows = [[r["name"], m["step"], *(f"{m[f'turn/{t}/teacher_kl']:.3f} ({m.get(f'turn/{t}/episodes', 0):.0f} ep)"
                                     if f"turn/{t}/teacher_kl" in m else "-" for t in range(TURNS))]
            for r in runs for m in first_last(r["dir"] / "metrics.jsonl")]
    return md_table(["run", "step", *(f"turn {t}" for t in range(TURNS))], rows) if rows else [
        "(no run logged turn/<t>/teacher_kl yet)"]


DIAGNOSTICS = ("loss/kept_frac", "loss/head_weight", "loss/fkl_weight", "loss/high_entropy_frac",
               "loss/teacher_entropy", "loss/kept_student_entropy", "loss/all_student_entropy", "loss/clip_frac",
               "loss/capped_frac", "loss/n_tokens")
"""What each objective does to the tokens (REFERENCES sections 5, 6, 8), in Table 5's column order."""


def table_diagnostics(runs: list[dict]) -> list[str]:
    """Table 5: each run's per-token `loss/` diagnostics, averaged over its training steps
    (metrics.jsonl); `-` where the objective does not log it."""
    rows, seen = [], set()
    for r in runs:
        p = r["dir"] / "metrics.jsonl"
        steps = [json.loads(x) for x in p.read_text().splitlines() if x.strip()] if p.exists() else []
        steps = [m for m in steps if "loss/n_tokens" in m]
        if not steps or r["method"] in REFS:
            continue
        cells = []
        for key in DIAGNOSTICS:
            vals = [m[key] for m in steps if isinstance(m.get(key), (int, float)) and not math.isnan(m[key])]
            seen.update([key] if vals else [])
            cells.append(_f(sum(vals) / len(vals), ".0f" if key == "loss/n_tokens" else ".3f") if vals else "-")
        rows.append([r["name"], len(steps), *cells])
    keep = [i for i, k in enumerate(DIAGNOSTICS) if k in seen]
    return md_table(["run", "steps", *(DIAGNOSTICS[i].removeprefix("loss/") for i in keep)],
                    [[*row[:2], *(row[2 + i] for i in keep)] for row in rows]) if rows else ["(no training metrics yet)"]


def curves(runs: list[dict], what: str) -> dict[str, tuple[list[float], int]]:
    """Per method: the per-turn held-out curve (`success`: on track, seeds averaged; `kl`: T=1
    reverse KL, tokens pooled over seeds) and how many runs it covers."""
    out = {}
    for method, rs in _group(runs).items():
        if what == "success":
            ms = [r["ev"]["m"] for r in rs if r["ev"] is not None]
            ys = [sum(on_track(m, t) for m in ms) / len(ms) for t in range(KL_TURNS)] if ms else []
        else:
            ms = [r["kl"]["turns"] for r in rs if r.get("kl") and r["kl"]["kind"] == "kl"]
            cells = [[k[str(t)] for k in ms if str(t) in k] for t in range(KL_TURNS)]
            ys = [sum(v * c for v, c in cs) / sum(c for _, c in cs) if cs else math.nan for cs in cells]
        if ms and not all(math.isnan(y) for y in ys):
            out[method] = (ys, len(ms))
    return out


def plot(runs: list[dict], root: Path) -> list[str]:
    """per_turn_success.png and per_turn_kl.png (methods solid; base / warm / teacher dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for what, fname, ylabel in (("success", "per_turn_success.png", "held-out episodes on track after turn t"),
                                ("kl", "per_turn_kl.png", "held-out teacher reverse KL (nats/token, T=1)")):
        lines = curves(runs, what)
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for method, (ys, n) in lines.items():
            ax.plot(range(KL_TURNS), ys, label=f"{method} ({n} run{'s' * (n > 1)})",
                    **({"linestyle": "--"} if method in REFS else {"marker": "o"}))
        ax.set(xlabel="assistant turn t", ylabel=ylabel, title=f"{root.name}: {ylabel.split(' (')[0]}",
               ylim=(0, 1) if what == "success" else None)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(root / fname, dpi=120)
        plt.close(fig)
        written.append(fname)
    return written


def summarize_root(a: argparse.Namespace) -> str:
    """Write ROOT/summary.md (and the plots) from whatever is finished; print it."""
    root = Path(a.root)
    latest = Path(a.refs or root) / "teacher" / "latest"
    teacher = a.teacher or (str(latest.parent / latest.read_text().strip()) if latest.exists() else None)
    teacher = teacher if teacher and (Path(teacher) / "config.json").exists() else None  # else: pending
    runs = discover(root, Path(a.refs) if a.refs else None)
    for r in runs:
        load_eval(r)
        r["kl"] = heldout_kl(r, teacher) if r["ev"] is not None else None
    md = [f"# Agentic methods: {root.name}", "",
          f"Teacher: `{teacher or 'pending'}`. Held-out = the greedy eval (`eval/`); 95% Wilson intervals, "
          "n = episodes minus infra errors; pass@k at temperature 1 from `eval_k*/`, with a conservative 95% "
          "interval (Wilson at n = tasks); CPU = user + sys of "
          "the run's training and greedy eval, pass@k CPU that of its T=1 evals (times.txt).", "", "## Table 1: runs", "",
          *table_runs(runs, {**(read_times(Path(a.refs)) if a.refs else {}), **read_times(root)}), "", "## Table 2: methods (pooled over seeds)", "",
          *table_methods(runs), ""]
    check = _json(root / "teacher_check.json")
    if check:  # the overall line of `check-teacher`
        o = {k: _f(v, ".2f") for k, v in check["overall"].items() if k != "n"}
        md += ["## The teacher on the student's states (teacher_check.json)", "", f"{check['overall']['n']} states "
               f"of {check['tasks']} T=1 training episodes of the warm student; teacher vs oracle: exact "
               f"{o.get('teacher_exact')}, same call {o.get('teacher_same_call')}, same decision "
               f"{o.get('teacher_same_decision')}; student oracle_ok {o.get('student_oracle_ok')}; teacher held-out "
               f"success {_f(check.get('teacher_heldout_success'))}.", ""]
    md += ["## Table 3: held-out per-turn teacher KL, mean (tokens)", "", *table_kl(runs), "",
           "## Table 4: training per-turn teacher KL (metrics.jsonl), first and last step", "",
           *table_train_kl(runs), "",
           "## Table 5: per-token loss diagnostics (metrics.jsonl `loss/`), mean over training steps", "",
           *table_diagnostics(runs), ""]
    pend = [r["name"] for r in runs if r["ev"] is None]
    md += [f"Pending: {', '.join(pend) if pend else 'none'}.", "", *(f"![{p}]({p})" for p in plot(runs, root))]
    text = "\n".join(md) + "\n"
    root.mkdir(parents=True, exist_ok=True)
    (root / "summary.md").write_text(text)
    print(text)
    return text


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check-teacher", help="the teacher's greedy turns on the student's own states")
    for flag in ("--env", "--teacher", "--student", "--out"):
        c.add_argument(flag, required=True, help={"--out": "JSON report path"}.get(flag, "model dir (step_<N>/)"))
    for flag, default in (("--n", 32), ("--max-new-tokens", 64), ("--max-turns", 6)):
        c.add_argument(flag, type=int, default=default)
    c.add_argument("--device", default="cpu")
    c.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    s = sub.add_parser("summarize", help="ROOT/summary.md and plots")
    s.add_argument("--root", required=True)
    s.add_argument("--teacher", default=None, help="teacher model dir (default: REFS/teacher/<latest>)")
    s.add_argument("--refs", default=None, help="where base/, warm/ and teacher/ are (default: ROOT)")
    a = p.parse_args(argv)
    check_teacher(a) if a.cmd == "check-teacher" else summarize_root(a)


if __name__ == "__main__":
    main()
