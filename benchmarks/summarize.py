"""Print the RESULTS.md tables from benchmarks/out (numbers are read, never typed by hand)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).parent / "out"


def base_success() -> None:
    print("| family | success | tool calls / ep | tool-error rate | mean turns | on track after turn 0 | 1 | 2 | 3 | 4 | eval seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for fam in ("calc", "files", "sql", "python"):
        p = OUT / f"base-{fam}" / "summary.json"
        if not p.exists():
            continue
        m = json.loads(p.read_text())["metrics"]
        turns = " | ".join(f"{m.get(f'turn/{t}/on_track', float('nan')):.2f}" for t in range(5))
        print(f"| {fam} | {m['eval/success']:.2f} | {m['tool/calls_per_episode']:.2f} | "
              f"{m['tool/error_rate']:.2f} | {m['eval/mean_turns']:.2f} | {turns} | {m['eval/seconds']:.0f} |")


def by_difficulty() -> None:
    from agentopd.envs.suites import load_tasks

    print("\n| family | difficulty 1 | difficulty 2 | difficulty 3 |\n|---|---|---|---|")
    for fam in ("calc", "files", "sql", "python"):
        p = OUT / f"base-{fam}" / "episodes.jsonl"
        if not p.exists():
            continue
        diff = {t.id: t.difficulty for t in load_tasks(fam, "test")}
        got: dict[int, list[bool]] = {1: [], 2: [], 3: []}
        for line in p.read_text().splitlines():
            e = json.loads(line)
            got[diff[e["task_id"]]].append(bool(e["success"]))
        cells = " | ".join(f"{sum(v)}/{len(v)}" for v in got.values())
        print(f"| {fam} | {cells} |")


def foundation() -> None:
    p = OUT / "foundation.json"
    if not p.exists():
        return
    r = json.loads(p.read_text())
    print("\nmachine:", r["machine"])
    print("\n| batch | sampled tokens | seconds | tokens/s |\n|---|---|---|---|")
    for k, v in r["rollout_throughput"].items():
        print(f"| {k.split('_')[1]} | {v['sampled_tokens']} | {v['seconds']:.1f} | {v['tokens_per_s']:.1f} |")
    print("\n| env | steps | median ms | p95 ms |\n|---|---|---|---|")
    for k, v in r["env_step_overhead"].items():
        print(f"| {k} | {v['steps']} | {v['median_ms']:.2f} | {v['p95_ms']:.2f} |")
    v = r["python_tool_latency"]
    print(f"\npython tool: {v['calls']} calls, median {v['median_ms']:.1f} ms, p95 {v['p95_ms']:.1f} ms ({v['isolation']})")


def teachers() -> None:
    print("\n| teacher | step | held-out success | held-out mean turns | rollout success | rollout mean turns "
          "| loss | teacher KL | rollout s | teacher s | learner s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    f = lambda r, k, fmt: format(r[k], fmt) if k in r else "-"  # noqa: E731
    for t in ("oracle", "self"):
        p = OUT / f"teacher-{t}" / "metrics.jsonl"
        if not p.exists():
            continue
        for line in p.read_text().splitlines():
            r = json.loads(line)
            loss = f(r, "loss/ce", ".3f") if "loss/ce" in r else f(r, "loss/kl", ".3f")
            print(f"| {t} | {r['step']} | {f(r, 'eval/success', '.3f')} | {f(r, 'eval/mean_turns', '.2f')} | "
                  f"{f(r, 'rollout/success', '.3f')} | {f(r, 'rollout/mean_turns', '.2f')} | {loss} | "
                  f"{f(r, 'teacher/reverse_kl', '.3f')} | {f(r, 'time/rollout_s', '.0f')} | {f(r, 'time/teacher_s', '.0f')} | "
                  f"{f(r, 'time/learner_s', '.0f')} | {f(r, 'time/peak_rss_mb', '.0f')} |")
    log = OUT / "default_teacher.log"
    if log.exists():
        for line in log.read_text(errors="replace").splitlines():
            if "cpu_user_s=" in line:
                print(f"\n    {line.strip()}")


def _metrics(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def opd_vs_sft(name: str = "opd_vs_sft") -> None:
    """Held-out success, per-turn on-track curve, step-time split and peak memory per method."""
    root = OUT / name
    if not root.exists():
        return
    for fam_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        fam = fam_dir.name
        print(f"\n#### {name}: {fam}\n")
        base = fam_dir / "base-eval" / "summary.json"
        if base.exists():
            m = json.loads(base.read_text())["metrics"]
            print(f"fresh student (greedy, {m['eval/episodes']:.0f} test tasks): success {m['eval/success']:.3f}")
        t = fam_dir / "teacher-eval-train" / "summary.json"
        if t.exists():
            m = json.loads(t.read_text())["metrics"]
            print(f"teacher (SFT on oracle demos) on {m['eval/episodes']:.0f} training tasks: success "
                  f"{m['eval/success']:.3f}")
        tt = [r for r in _metrics(fam_dir / "teacher" / "metrics.jsonl") if "eval/success" in r]
        if tt:
            print(f"teacher on held-out test tasks after {tt[-1]['step']} steps: success {tt[-1]['eval/success']:.3f}")
        print("\n| method | seed | steps | held-out success | on track after turn 0 | 1 | 2 | 3 | rollout s/step "
              "| teacher s/step | learner s/step | peak RSS MB |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        per_method: dict[str, list[float]] = {}
        for method in ("sft", "reverse_kl_pg", "gkd", "dagger"):
            for run in sorted(fam_dir.glob(f"{method}-seed*")):
                rows = _metrics(run / "metrics.jsonl")
                ev = [r for r in rows if "eval/success" in r]
                steps = [r for r in rows if "time/rollout_s" in r]
                if not ev or not steps:
                    continue
                last = ev[-1]
                per_method.setdefault(method, []).append(last["eval/success"])
                turns = " | ".join(f"{_on_track(last, i, 'eval_turn/', 'eval/'):.2f}" for i in range(4))
                avg = [sum(r[k] for r in steps) / len(steps) for k in ("time/rollout_s", "time/teacher_s", "time/learner_s")]
                print(f"| {method} | {run.name.split('seed')[1]} | {last['step']} | {last['eval/success']:.3f} | {turns} | "
                      + " | ".join(f"{a:.1f}" for a in avg) + f" | {max(r['time/peak_rss_mb'] for r in steps):.0f} |")
        plot_per_turn(fam_dir)
        per_turn_kl(fam_dir)
        if per_method:
            print("\n| method | runs | mean held-out success | min | max |\n|---|---|---|---|---|")
            for method, v in per_method.items():
                print(f"| {method} | {len(v)} | {sum(v) / len(v):.3f} | {min(v):.3f} | {max(v):.3f} |")


def _on_track(m: dict, t: int, turn_prefix: str, prefix: str) -> float:
    """On-track fraction after turn t; past the longest episode every episode has ended, and an
    ended episode counts as on track iff it succeeded, so the value is the success rate."""
    return m.get(f"{turn_prefix}{t}/on_track", m.get(f"{prefix}success", float("nan")))


def per_turn_kl(fam_dir: Path, turns: int = 3) -> None:
    """Teacher reverse KL (nats/token on the student's sampled tokens) per turn, first vs last step."""
    runs = [r for m in ("reverse_kl_pg", "gkd") for r in sorted(fam_dir.glob(f"{m}-seed*"))]
    rows = [(run.name, [r for r in _metrics(run / "metrics.jsonl") if "turn/0/teacher_kl" in r]) for run in runs]
    rows = [(n, s) for n, s in rows if len(s) > 1]
    if not rows:
        return
    head = " | ".join(f"turn {t}" for t in range(turns))
    print(f"\n| run | step | {head} |\n|---|---|" + "---|" * turns)
    for name, steps in rows:
        for r in (steps[0], steps[-1]):
            cells = " | ".join(f"{r[f'turn/{t}/teacher_kl']:.2f} ({r[f'turn/{t}/episodes']:.0f})"
                               if f"turn/{t}/teacher_kl" in r else "-" for t in range(turns))
            print(f"| {name} | {r['step']} | {cells} |")


def plot_per_turn(fam_dir: Path, turns: int = 6) -> None:
    """per_turn_success.png: held-out on-track fraction after each turn, per method (mean over
    seeds), with the fresh student for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    base = fam_dir / "base-eval" / "summary.json"
    if base.exists():
        m = json.loads(base.read_text())["metrics"]
        ax.plot(range(turns), [_on_track(m, t, "turn/", "eval/") for t in range(turns)], "k--",
                label="fresh student")
    drawn = False
    for method in ("sft", "reverse_kl_pg", "gkd", "dagger"):
        curves, steps = [], set()
        for run in sorted(fam_dir.glob(f"{method}-seed*")):
            ev = [r for r in _metrics(run / "metrics.jsonl") if "eval/success" in r]
            if ev:
                curves.append([_on_track(ev[-1], t, "eval_turn/", "eval/") for t in range(turns)])
                steps.add(ev[-1]["step"])
        if curves:
            mean = [sum(c[t] for c in curves) / len(curves) for t in range(turns)]
            after = "/".join(str(s) for s in sorted(steps))
            ax.plot(range(turns), mean, marker="o",
                    label=f"{method} ({len(curves)} seed{'s' * (len(curves) > 1)}, {after} updates)")
            drawn = True
    if not drawn:
        plt.close(fig)
        return
    ax.set_xlabel("assistant turn t")
    ax.set_ylabel("held-out episodes still on track after turn t")
    ax.set_ylim(0, 1)
    ax.set_title(f"{fam_dir.name}: per-turn success after training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(fam_dir / "per_turn_success.png", dpi=120)
    plt.close(fig)


def step_times() -> None:
    """Step-time split before and after the layered redesign (benchmarks/step_times.sh)."""
    root = OUT / "step_times"
    print("\n| run | code | step | rollout s | teacher s | learner s | teacher + learner s | mean turns |")
    print("|---|---|---|---|---|---|---|---|")
    for run in ("dagger-calc", "dagger-python", "gkd-calc"):
        for label in ("before", "after"):
            for m in _metrics(root / label / run / "metrics.jsonl"):
                t, lr = m["time/teacher_s"], m["time/learner_s"]
                print(f"| {run} | {label} | {m['step']} | {m['time/rollout_s']:.1f} | {t:.2f} | {lr:.1f} "
                      f"| {t + lr:.1f} | {m.get('rollout/mean_turns', float('nan')):.2f} |")


def same_numbers() -> None:
    """benchmarks/same_numbers.py: how many logged values differ before/after the redesign."""
    before, after = OUT / "same_numbers" / "before.json", OUT / "same_numbers" / "after.json"
    if before.exists() and after.exists():
        sys.path.insert(0, str(Path(__file__).parent))
        from same_numbers import compare

        a, b = json.loads(after.read_text()), json.loads(before.read_text())
        n = sum(len(r) for rows in a.values() for r in rows)
        print(f"\nsame_numbers: {len(a)} runs, {n} logged values, {len(compare(a, b))} differences (tolerance 1e-6)")


if __name__ == "__main__":
    base_success()
    by_difficulty()
    foundation()
    teachers()
    opd_vs_sft()
    opd_vs_sft("opd_vs_sft_long")
    step_times()
    same_numbers()
