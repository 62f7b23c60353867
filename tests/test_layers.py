"""The import contract: each layer imports only the layers below it (checked on every import
statement, including imports inside functions)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"agentopd": ROOT / "agentopd", "agentopd.envs": ROOT / "envs", "agentopd.tools": ROOT / "tools"}

# layer -> the agentopd layers it may import (itself always allowed)
ALLOWED = {
    "core": set(),
    "tools": {"core"},
    "envs": {"core", "tools"},
    "inference": {"core"},
    "rollout": {"core", "inference"},
    "teachers": {"core", "inference", "rollout"},
    "training": {"core", "inference"},
    "metrics": {"core"},
    "recipes": {"core", "tools", "envs", "inference", "rollout", "teachers", "training", "metrics"},
    "cli": {"core", "tools", "envs", "inference", "recipes", "metrics"},
}


def _layer(module: str) -> str | None:
    """The layer of an agentopd module name (``agentopd.rollout.runner`` -> ``rollout``)."""
    parts = module.split(".")
    if parts[0] != "agentopd" or len(parts) < 2:
        return None
    return parts[1]


def _modules():
    for pkg, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            name = ".".join([pkg, *rel.parts]).removesuffix(".__init__")
            yield name, path


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
            for a in node.names:  # `from agentopd import envs` imports the envs layer
                yield f"{node.module}.{a.name}", node.lineno


def test_every_layer_imports_only_downward():
    bad = []
    seen = set()
    for name, path in _modules():
        layer = _layer(name)
        if layer is None or layer not in ALLOWED:
            continue  # the package root (registers the env families)
        seen.add(layer)
        for mod, line in _imports(path):
            target = _layer(mod)
            if target is None or target == layer or target not in ALLOWED:
                continue
            if target not in ALLOWED[layer]:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {layer} imports {mod} ({target})")
    assert seen == set(ALLOWED), f"layers without modules: {set(ALLOWED) - seen}"
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_training_never_imports_envs_or_rollouts():
    assert not ALLOWED["training"] & {"envs", "rollout", "teachers"}


def test_every_subpackage_has_a_docstring():
    for folder in [p for p in (ROOT / "agentopd").iterdir() if (p / "__init__.py").exists()]:
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
        assert doc and len(doc) > 80, f"{folder.name}/__init__.py needs a one-paragraph docstring"
