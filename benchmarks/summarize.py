"""Print the RESULTS.md tables from benchmarks/out (numbers are read, never typed by hand)."""

from __future__ import annotations

import json
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
    from agentopd.suites import load_tasks

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
    print("\n| teacher | step | eval success | eval on-track t0 | t1 | t2 |\n|---|---|---|---|---|---|")
    for t in ("oracle", "self"):
        p = OUT / f"teacher-{t}" / "metrics.jsonl"
        if not p.exists():
            continue
        for line in p.read_text().splitlines():
            r = json.loads(line)
            if r.get("eval/success") is not None:
                tr = " | ".join(f"{r.get(f'eval_turn/{i}/on_track') or float('nan'):.2f}" for i in range(3))
                print(f"| {t} | {r['step']} | {r['eval/success']:.3f} | {tr} |")
    for t in ("oracle", "self"):
        p = OUT / f"teacher-{t}" / "metrics.jsonl"
        if not p.exists():
            continue
        rows = [json.loads(x) for x in p.read_text().splitlines()]
        steps = [r for r in rows if r.get("time/rollout_s") is not None]
        if steps:
            avg = {k: sum(r[k] for r in steps) / len(steps) for k in ("time/rollout_s", "time/teacher_s", "time/learner_s")}
            print(f"{t}: mean per step over {len(steps)} steps: " + ", ".join(f"{k} {v:.1f}" for k, v in avg.items())
                  + f", peak RSS {max(r['time/peak_rss_mb'] for r in steps):.0f} MB")


if __name__ == "__main__":
    base_success()
    by_difficulty()
    foundation()
    teachers()
