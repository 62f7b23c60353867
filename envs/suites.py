"""Loading released task suites (``tasks/<family>/v<N>/<split>.jsonl``)."""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path

from agentopd.core.types import Task

SPLITS = ("train", "test")


def suite_path(family: str, split: str, version: int = 1) -> Path:
    root = resources.files("agentopd.tasks")
    return Path(str(root)) / family / f"v{version}" / f"{split}.jsonl"


@functools.lru_cache(maxsize=64)
def load_tasks(family: str, split: str, version: int = 1) -> tuple[Task, ...]:
    """All tasks of one split of one suite, in file order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    path = suite_path(family, split, version)
    if not path.exists():
        raise FileNotFoundError(
            f"no task suite at {path}; regenerate it with python tasks/{family}/generate.py"
        )
    tasks = []
    with path.open() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                tasks.append(Task.from_json(json.loads(line)))
            except (json.JSONDecodeError, KeyError) as e:
                raise ValueError(f"{path}:{lineno}: malformed task: {e}") from e
    return tuple(tasks)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")


def write_splits(folder: Path, generate, counts) -> None:
    """Write every split of a suite (the ``__main__`` of each ``tasks/<family>/generate.py``)."""
    for split in counts:
        write_jsonl(folder / f"{split}.jsonl", generate(split))
        print(f"wrote {folder / f'{split}.jsonl'}")
