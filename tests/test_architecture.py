"""The layout's arrows (docs/ARCHITECTURE.md), checked on the source: every import of every file, function-level
included, read with ``ast`` (an independent reading of the code, not the code's own claims)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "vitlens"


def _modules() -> dict[str, Path]:
    mods = {}
    for f in ROOT.rglob("*.py"):
        parts = list(f.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


MODS = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODS:
        name = name.rpartition(".")[0]
    return name or None


def _imports(mod: str) -> tuple[set[str], set[str]]:
    """(vitlens modules, top-level third-party packages) that ``mod`` imports anywhere in its file."""
    f = MODS[mod]
    here = mod if f.name == "__init__.py" else mod.rpartition(".")[0]
    inner: set[str] = set()
    outer: set[str] = set()
    for node in ast.walk(ast.parse(f.read_text(), str(f))):
        if isinstance(node, ast.Import):
            for a in node.names:
                (inner if a.name.split(".")[0] == "vitlens" else outer).add(
                    a.name if a.name.startswith("vitlens") else a.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = ".".join(base[: len(base) - (node.level - 1)] + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "vitlens":
                base = node.module
            else:
                outer.add((node.module or "").split(".")[0])
                continue
            for a in node.names:
                inner.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODS else base)
    resolved = {r for t in inner if (r := _resolve(t)) and r != mod}
    return resolved, outer


GRAPH = {m: _imports(m)[0] for m in MODS}


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_two_files_import_each_other():
    circles = sorted({tuple(sorted((m, o))) for m in MODS for o in _reachable(m) if m in _reachable(o) and m != o})
    assert not circles, f"import circles: {circles}"


def _package(mod: str) -> str:
    parts = mod.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else mod


@pytest.mark.parametrize(
    ("lower", "upper"),
    [
        ("vitlens.app", "vitlens.cli"),  # the app never calls the CLI
        ("vitlens.models", "vitlens.explainers"),  # the adapters know nothing of methods
        ("vitlens.models", "vitlens.metrics"),
        ("vitlens.explainers", "vitlens.metrics"),
        ("vitlens.data", "vitlens.report"),  # drawing lives in viz, below data
        ("vitlens.data", "vitlens.bench"),
        ("vitlens.bench", "vitlens.report"),
        ("vitlens.bench", "vitlens.app"),
        ("vitlens.report", "vitlens.app"),
    ],
)
def test_arrows_run_one_way(lower, upper):
    wrong = sorted(f"{m} -> {o}" for m in MODS if _package(m) == lower for o in GRAPH[m] if _package(o) == upper)
    assert not wrong, f"{lower} must not import {upper}: {wrong}"


def test_shells_are_leaves():
    """Nothing below the shells imports the CLI or the app (the CLI may start the app; ``python -m vitlens``
    runs the CLI)."""
    shells = ("vitlens.__main__", "vitlens.cli", "vitlens.app")
    for shell in shells[1:]:
        users = sorted(m for m in MODS if _package(m) not in shells and any(_package(o) == shell for o in GRAPH[m]))
        assert not users, f"{shell} is imported by library code: {users}"


def test_viz_imports_nothing_of_vitlens():
    inside = sorted(
        f"{m} -> {o}" for m in MODS if _package(m) == "vitlens.viz" for o in GRAPH[m] if _package(o) != "vitlens.viz"
    )
    assert not inside, inside


def test_only_adapters_import_architecture_libraries():
    """The model adapters (and training, which creates timm models) are the only code that imports timm or
    transformers."""
    allowed = ("vitlens.models", "vitlens.training")  # training builds and fine-tunes timm models
    wrong = sorted(
        f"{m} imports {pkg}"
        for m in MODS
        if _package(m) not in allowed
        for pkg in _imports(m)[1]
        if pkg in ("timm", "transformers")
    )
    assert not wrong, wrong


def test_only_the_workers_module_knows_torch_distributed():
    """``bench/workers.py`` is the one place that uses torch.distributed (imports or ``dist.`` / ``torch.distributed``
    attribute chains); the runner and everything else go through its ``Workers``."""
    wrong = []
    for m, f in MODS.items():
        if m == "vitlens.bench.workers":
            continue
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            elif isinstance(node, ast.Attribute) and node.attr == "distributed":
                names = ["torch.distributed"] if isinstance(node.value, ast.Name) and node.value.id == "torch" else []
            wrong += [f"{m}: {n}" for n in names if n.startswith("torch.distributed")]
    assert not wrong, wrong


def test_only_adapters_name_architecture_classes():
    """Outside the adapters no code recognises a timm / transformers class by its name (the qualified-name
    allow-lists an explainer could keep instead of asking its model's adapter)."""
    allowed = ("vitlens.models", "vitlens.training")
    wrong = []
    for m, f in MODS.items():
        if _package(m) in allowed:
            continue
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if node.value.startswith(("timm.models.", "timm.layers.", "transformers.models.")):
                    wrong.append(f"{m}: {node.value!r}")
    assert not wrong, wrong


# the layers of docs/ARCHITECTURE.md, top (shells) to bottom (foundations)
LAYERS = {
    "vitlens.__main__": 11,
    "vitlens.cli": 10,
    "vitlens.app": 9,
    "vitlens.explain_files": 8,
    "vitlens.demo": 8,
    "vitlens.training": 8,
    "vitlens.report": 8,
    "vitlens.bench": 7,
    "vitlens.data": 6,
    "vitlens.metrics": 5,
    "vitlens.explainers": 4,
    "vitlens.models": 3,
    "vitlens.viz": 2,
    **dict.fromkeys((f"vitlens.{m}" for m in ("registry", "specs", "devices", "files", "maps", "version")), 1),
    "vitlens.errors": 0,
}


def test_every_package_has_a_layer():
    assert {_package(m) for m in MODS} - {"vitlens"} == set(LAYERS)


def test_imports_run_down_the_layers():
    """Every import between packages goes to a lower layer (none sideways, none up); nothing imports the
    facade ``vitlens/__init__.py``."""
    wrong = sorted(
        f"{m} -> {o}"
        for m in MODS
        for o in GRAPH[m]
        if _package(m) != _package(o)
        and (o == "vitlens" or (_package(m) != "vitlens" and LAYERS[_package(o)] >= LAYERS[_package(m)]))
    )
    assert not wrong, wrong
