"""Checkpoint integrity: a manifest written last, verified on resume, with a fallback.

A checkpoint ``step_<N>/`` is complete when its ``manifest.json`` (written after every other
file, then the directory renamed into place) lists each file's size and SHA-256 and they all
match. `find_checkpoint` returns the newest intact one, saying why it skipped others (a
truncated ``trainer_state.pt`` or ``model.safetensors``, a `latest` pointing nowhere), so a
damaged run resumes from what is intact instead of crashing or silently starting over.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(ckpt: Path) -> None:
    """Record every file of `ckpt` (call it last, before the directory is renamed into place)."""
    files = {p.relative_to(ckpt).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(ckpt.rglob("*")) if p.is_file() and p.name != MANIFEST}
    tmp = ckpt / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"files": files}, indent=1))
    os.replace(tmp, ckpt / MANIFEST)


def verify(ckpt: Path) -> str | None:
    """None if `ckpt` is intact, else what is wrong with it."""
    if not (ckpt / "trainer_state.pt").is_file():
        return "no trainer_state.pt"
    manifest = ckpt / MANIFEST
    if not manifest.is_file():  # written before manifests existed: accept what is there
        return None if (ckpt / "config.json").is_file() else "no manifest and no config.json"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as e:
        return f"unreadable manifest ({e})"
    for name, want in files.items():
        p = ckpt / name
        if not p.is_file():
            return f"{name} is missing"
        if p.stat().st_size != want["size"]:
            return f"{name} is truncated ({p.stat().st_size} of {want['size']} bytes)"
        if _sha256(p) != want["sha256"]:
            return f"{name} is corrupt (checksum mismatch)"
    return None


def _steps(run_dir: Path) -> list[Path]:
    found = [p for p in Path(run_dir).glob("step_*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]), reverse=True)


def has_checkpoints(run_dir: Path) -> bool:
    """Whether `run_dir` holds any trace of checkpoints (intact or not)."""
    return (Path(run_dir) / "latest").exists() or bool(_steps(run_dir))


def find_checkpoint(run_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest intact checkpoint (None if there is none) and a note per one skipped."""
    notes: list[str] = []
    pointer = Path(run_dir) / "latest"
    if pointer.exists():
        named = Path(run_dir) / pointer.read_text().strip()
        if not named.is_dir():
            notes.append(f"'latest' names {named.name}, which does not exist")
    for ckpt in _steps(run_dir):
        problem = verify(ckpt)
        if problem is None:
            return ckpt, notes
        notes.append(f"{ckpt.name}: {problem}")
    return None, notes


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest intact checkpoint of `run_dir`, or None."""
    return find_checkpoint(run_dir)[0]


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
