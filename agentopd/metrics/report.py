"""`agentopd report RUN_DIR`: PNG plots and a short markdown summary of a training run."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from agentopd.metrics.sinks import read_metrics


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None and math.isfinite(r[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def _turn_keys(rows: list[dict], prefix: str, name: str) -> list[int]:
    pat = re.compile(rf"^{re.escape(prefix)}/(\d+)/{re.escape(name)}$")
    return sorted({int(m.group(1)) for r in rows for k in r if (m := pat.match(k))})


def write_report(run_dir: str | Path) -> list[Path]:
    """Write the run's plots and ``report.md``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    run = Path(run_dir)
    rows = read_metrics(run)
    if not rows:
        raise ValueError(f"{run}/metrics.jsonl has no steps")
    out = [p for plot in (_per_turn_kl, _per_turn_success, _learning_curves) if (p := plot(run, rows)) is not None]
    out.append(_summary(run, rows, out))
    return out


def _per_turn_kl(run: Path, rows: list[dict]) -> Path | None:
    """Per-turn teacher KL (or target NLL) by step: where does the error accumulate?"""
    import matplotlib.pyplot as plt
    import numpy as np

    metric = "teacher_kl" if _turn_keys(rows, "turn", "teacher_kl") else "target_nll"
    turns = _turn_keys(rows, "turn", metric)
    if not turns:
        return None
    grid = np.full((len(turns), len(rows)), np.nan)
    for j, r in enumerate(rows):
        for i, t in enumerate(turns):
            v = r.get(f"turn/{t}/{metric}")
            if v is not None:
                grid[i, j] = v
    fig, ax = plt.subplots(figsize=(max(5, 0.4 * len(rows) + 3), 0.45 * len(turns) + 2))
    im = ax.imshow(grid, aspect="auto", origin="lower", cmap="magma",
                   extent=(rows[0]["step"] - 0.5, rows[-1]["step"] + 0.5, turns[0] - 0.5, turns[-1] + 0.5))
    fig.colorbar(im, ax=ax, label=metric.replace("_", " "))
    ax.set_xlabel("training step")
    ax.set_ylabel("assistant turn")
    ax.set_title(f"per-turn {metric.replace('_', ' ')} by step")
    return _save(fig, run / "per_turn_kl.png")


def _per_turn_success(run: Path, rows: list[dict]) -> Path | None:
    """Per-turn success (still on track after turn t) at the start vs the end."""
    import matplotlib.pyplot as plt

    prefix = "eval_turn" if _turn_keys(rows, "eval_turn", "on_track") else "turn"
    t_on = _turn_keys(rows, prefix, "on_track")
    with_curve = [r for r in rows if any(f"{prefix}/{t}/on_track" in r for t in t_on)]
    if not with_curve:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    warm = _warm_steps(run)
    for r in with_curve if prefix == "eval_turn" else [with_curve[0], with_curve[-1]]:
        ts = [t for t in t_on if f"{prefix}/{t}/on_track" in r]
        ax.plot(ts, [r[f"{prefix}/{t}/on_track"] for t in ts], marker="o", label=_stage(r["step"], warm))
    ax.set_xlabel("assistant turn t")
    ax.set_ylabel("fraction still on track")
    ax.set_ylim(0, 1.05)
    ax.set_title(("held-out" if prefix == "eval_turn" else "training rollouts") + ": per-turn success")
    ax.legend()
    return _save(fig, run / "per_turn_success.png")


def _warm_steps(run: Path) -> int:
    cfg = json.loads((run / "config.json").read_text()) if (run / "config.json").exists() else {}
    return int(cfg.get("warm_start_steps", 0))


def _stage(step: int, warm: int) -> str:
    if step == 0:
        return "start (step 0)"
    return f"after the warm start (step {step})" if step == warm else f"step {step}"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of k successes in n."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    mid, half = (p + z * z / (2 * n)), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return ((mid - half) / (1 + z * z / n), (mid + half) / (1 + z * z / n))


def two_proportion_z(k1: int, n1: int, k2: int, n2: int) -> float:
    """z of the difference k2/n2 - k1/n1 (pooled standard error)."""
    p = (k1 + k2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2)) if 0 < p < 1 else 0.0
    return (k2 / n2 - k1 / n1) / se if se else 0.0


def _held_out(rows: list[dict], warm: int) -> list[str]:
    """Held-out success per eval with intervals, first vs last z, and where per turn it moved."""
    evals = [r for r in rows if r.get("eval/success") is not None and r.get("eval/episodes")]
    if not evals:
        return []
    turns = _turn_keys(evals, "eval_turn", "on_track")[:6]
    lines = ["", "## Held-out evals", "",
             "| step | stage | success | 95% interval | " + " | ".join(f"on track after turn {t}" for t in turns)
             + " | stop: loop |", "|---" * (5 + len(turns)) + "|"]
    for r in evals:
        n = int(r["eval/episodes"] - r.get("eval/infra_errors", 0))
        k = round(r["eval/success"] * n)
        lo, hi = wilson(k, n)
        cells = [f"{v:.2f}" if (v := r.get(f"eval_turn/{t}/on_track")) is not None else "-" for t in turns]
        lines.append(f"| {r['step']} | {_stage(r['step'], warm)} | {k}/{n} = {r['eval/success']:.3f} | "
                     f"[{lo:.2f}, {hi:.2f}] | " + " | ".join(cells) + f" | {r.get('eval_stop/loop', 0.0):.2f} |")
    if len(evals) > 1:
        a, b = evals[0], evals[-1]
        na, nb = (int(x["eval/episodes"] - x.get("eval/infra_errors", 0)) for x in (a, b))
        z = two_proportion_z(round(a["eval/success"] * na), na, round(b["eval/success"] * nb), nb)
        lines += ["", f"First vs last held-out eval: {a['eval/success']:.3f} -> {b['eval/success']:.3f}, "
                  f"two-proportion z = {z:.2f} ({'beyond' if abs(z) >= 2 else 'within'} noise at |z| >= 2)."]
        pairs = [(a, b)] + [(w, b) for w in evals if w["step"] == warm and 0 < warm < b["step"]]
        def on(r: dict, t: int) -> float:  # no episode reached turn t: each counts as its final success
            return r.get(f"eval_turn/{t}/on_track", r["eval/success"])

        for x, y in pairs:
            moved = [(on(y, t) - on(x, t), t) for t in turns]
            if moved:
                d, t = max(moved, key=lambda m: abs(m[0]))
                lines.append(f"Step {x['step']} -> {y['step']}: the largest per-turn change is after turn {t} "
                             f"({on(x, t):.2f} -> {on(y, t):.2f} of episodes still on track, {d:+.2f}).")
    return lines


def _learning_curves(run: Path, rows: list[dict]) -> Path | None:
    import matplotlib.pyplot as plt
    import numpy as np

    keys = [k for k in ("rollout/success", "eval/success", "teacher/reverse_kl", "loss/ce",
                        "loss/loss", "teacher/top1_agree") if _series(rows, k)[0]]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2))
    for ax, k in zip(np.atleast_1d(axes), keys):
        xs, ys = _series(rows, k)
        ax.plot(xs, ys, marker=".")
        ax.set_title(k)
        ax.set_xlabel("step")
    return _save(fig, run / "learning_curves.png")


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _summary(run: Path, rows: list[dict], plots: list[Path]) -> Path:
    cfg = json.loads((run / "config.json").read_text()) if (run / "config.json").exists() else {}
    lines = [f"# Run report: {run}", "",
             f"env `{cfg.get('env')}`, student `{cfg.get('student')}`, teacher `{cfg.get('teacher')}`, "
             f"loss `{cfg.get('resolved_loss', cfg.get('loss'))}`, {len(rows)} logged steps", "",
             "| metric | first logged | last logged |", "|---|---|---|"]
    for k in ("rollout/success", "eval/success", "teacher/reverse_kl", "teacher/top1_agree", "loss/ce",
              "tool/error_rate", "rollout/first_divergence_mean", "time/rollout_s", "time/teacher_s",
              "time/learner_s", "time/peak_rss_mb"):
        have = [r[k] for r in rows if r.get(k) is not None]
        f, la = (have[0], have[-1]) if have else (None, None)
        if f is not None or la is not None:
            fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
            lines.append(f"| {k} | {fmt(f)} | {fmt(la)} |")
    lines += _held_out(rows, _warm_steps(run))
    lines += [""] + [f"![{p.stem}]({p.name})" for p in plots]
    md = run / "report.md"
    md.write_text("\n".join(lines) + "\n")
    return md
