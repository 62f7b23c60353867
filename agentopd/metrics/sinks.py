"""Metrics sinks: JSONL (always), TensorBoard (always), wandb (when installed and WANDB_PROJECT is set)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


class MetricsLogger:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "metrics.jsonl"
        self._f = self.path.open("a")
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(str(Path(run_dir) / "tb"))
        self._wandb = None
        if os.environ.get("WANDB_PROJECT"):
            try:
                import wandb

                self._wandb = wandb.init(project=os.environ["WANDB_PROJECT"], dir=str(run_dir))
            except ImportError:
                pass

    def log(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k: (float(v) if v is not None else None) for k, v in metrics.items()}
        self._f.write(json.dumps({"step": step, **{k: (None if v is not None and math.isnan(v) else v)
                                                   for k, v in clean.items()}}) + "\n")
        self._f.flush()
        for k, v in clean.items():
            if v is not None and math.isfinite(v):
                self._tb.add_scalar(k, v, step)
        self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(clean, step=step)

    def close(self) -> None:
        self._f.close()
        self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def repair_metrics(run_dir: Path, through_step: int) -> int:
    """Before a run continues from the checkpoint of `through_step`: keep only whole metric lines
    of steps up to it (a kill mid-write tears the last line; a kill during a checkpoint write
    leaves the line of a step that will run again). Returns how many lines were dropped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
            ok = int(row["step"]) <= through_step
        except (ValueError, KeyError, TypeError):
            ok = False
        if ok:
            kept.append(line)
        elif line.strip():
            dropped += 1
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(k + "\n" for k in kept))
    os.replace(tmp, path)
    return dropped


def read_metrics(run_dir: Path) -> list[dict]:
    """All logged steps; a resumed run's re-logged steps replace the earlier lines. A torn last
    line (a run killed while writing it) is skipped; any other bad line is an error naming it."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"{run_dir} has no metrics.jsonl: pass a run directory written by agentopd train")
    lines = path.read_text(errors="replace").splitlines()
    by_step: dict[int, dict] = {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            step = int(row["step"])
        except (ValueError, KeyError, TypeError) as e:
            if lineno == len(lines):
                continue  # torn by a kill mid-write
            raise ValueError(f"{path}:{lineno}: not a metrics line ({type(e).__name__}: {e})") from None
        by_step[step] = row
    return [by_step[s] for s in sorted(by_step)]
