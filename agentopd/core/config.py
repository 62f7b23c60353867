"""Config dataclasses <-> CLI flags and config files, without copying fields by hand.

`field_docs` reads each field's docstring (the string literal under it) so the CLI help is the
dataclass documentation; `load_config` merges defaults < a JSON/TOML file < explicit flags and
rejects unknown keys and wrong types with a clear message.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import textwrap
import types
import typing
from pathlib import Path
from typing import Any


class UserError(ValueError):
    """A mistake in what the user asked for (a bad id, path or value): shown as one line that
    says what would work, never as a traceback."""


def field_docs(cls: type) -> dict[str, str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def _coerce(name: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(name, value, args[0])
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lstrip("-").isdigit():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise ValueError(f"config field {name!r} expects {getattr(tp, '__name__', tp)}, got {value!r}")


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    if not path.is_file():
        raise ValueError(f"config file {path} is not a file: pass a JSON or TOML file of config fields")
    try:
        text = path.read_text()
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - reported with the file name
        raise ValueError(f"cannot parse config file {path}: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} holds {type(data).__name__} {str(data)[:40]!r}: it must hold "
                         'one JSON object (or TOML table) of config fields, e.g. {"steps": 10}')
    return data


def load_config(cls: type, file: str | Path | None = None, **overrides: Any):
    """Build `cls` from defaults, then `file` (JSON or TOML), then non-None `overrides`."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if file is not None:
        data = read_config_file(file)
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown} in {file}; valid keys: {sorted(names)}")
        values.update(data)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**{k: _coerce(k, v, hints[k]) for k, v in values.items()})
