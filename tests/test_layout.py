"""The package's layout rules, read from the source: every import statement counts, those inside functions too.

* imports point one way, down the layers of :data:`LAYERS` (siblings in one layer are independent);
* no import cycle between modules;
* a backend subpackage never imports another backend;
* hwnas's own targets are registered through its ``hwnas.targets`` entry points, as plugins are;
* the example plugin and ``docs/writing-a-target.md`` use only ``hwnas.targets.api``.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hwnas"

#: top-level parts of hwnas, bottom layer first; the parts of one layer may not import each other
LAYERS: list[set[str]] = [
    {"hwnas", "errors", "util", "data", "metrics"},
    {"ir", "hss", "arch"},
    {"cost", "passes"},
    {"targets", "accuracy"},
    {"pipeline"},
    {"search"},
    {"cli"},
    {"__main__"},
]
#: the backend subpackages (and single-file backends) of hwnas.targets
BACKENDS = {"cpu", "gpu", "mcu", "accel", "published"}
#: the modules of hwnas.targets every backend may use: the contract, the registry, shared machinery
TARGETS_SHARED = {"hwnas.targets", "hwnas.targets.base", "hwnas.targets.api", "hwnas.targets.quantized",
                  "hwnas.targets.remote"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _resolve(name: str) -> str:
    """The module a dotted name refers to: itself if it is a module, else its longest module prefix."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """(imported hwnas module, line) for every import statement of ``path``, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(_resolve(a.name), node.lineno) for a in node.names if a.name.split(".")[0] == "hwnas"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "hwnas":
                continue
            for alias in node.names:  # `from hwnas.ir import lower` imports the module hwnas.ir.lower
                found.append((_resolve(f"{source}.{alias.name}"), node.lineno))
    return [(m, line) for m, line in found if m and m != module]


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "hwnas"


def _layer(module: str) -> int:
    part = _part(module)
    for i, layer in enumerate(LAYERS):
        if part in layer:
            return i
    raise AssertionError(f"{module}: its folder {part!r} is in no layer of tests/test_layout.py")


def _backend(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) >= 3 and parts[1] == "targets" and parts[2] in BACKENDS:
        return parts[2]
    return None


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)


def test_imports_point_down_the_layers():
    wrong = []
    for module, imports in GRAPH.items():
        for imported, line in imports:
            same_part = _part(imported) == _part(module)
            if same_part or _layer(imported) < _layer(module) or (_layer(imported) == _layer(module) == 0):
                continue
            wrong.append(f"{MODULES[module].relative_to(ROOT)}:{line} imports {imported} "
                         f"(layer {_layer(module)} -> {_layer(imported)})")
    assert not wrong, "imports that do not point down the layers:\n" + "\n".join(wrong)


def test_no_import_cycles():
    # Tarjan's strongly connected components over every import, function-level ones included
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w, _ in GRAPH.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_a_backend_never_imports_another_backend():
    wrong = []
    for module, imports in GRAPH.items():
        mine = _backend(module)
        if _part(module) != "targets":
            continue
        for imported, line in imports:
            theirs = _backend(imported)
            if _part(imported) != "targets" or imported in TARGETS_SHARED or theirs == mine:
                continue
            if mine is None and theirs is None:
                continue  # shared target machinery among itself
            wrong.append(f"{MODULES[module].relative_to(ROOT)}:{line} imports {imported}")
    assert not wrong, "backends importing other backends (or shared machinery importing a backend):\n" + \
        "\n".join(wrong)


def test_builtin_targets_are_entry_points():
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["hwnas.targets"]
    from hwnas.targets import BUILTIN_TARGETS, plugin_errors, target_class

    assert sorted(declared) == sorted(BUILTIN_TARGETS)
    for name, where in declared.items():
        module, _, cls = where.partition(":")
        assert _backend(module) is not None, f"{name} = {where} is not a backend of hwnas.targets"
        assert target_class(name).__name__ == cls
    assert not plugin_errors()
    # the registry itself names no backend: it only reads the entry points
    assert not [m for m, _ in GRAPH["hwnas.targets"] if _backend(m)]


def _plugin_imports(source: str, filename: str) -> list[str]:
    tree = ast.parse(source, filename=filename)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "hwnas":
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names if a.name.split(".")[0] == "hwnas"]
    return names


def test_example_plugin_uses_only_the_api():
    for path in sorted((ROOT / "examples").rglob("*.py")):
        if "build" in path.parts:  # a copy left by an install of the example
            continue
        used = _plugin_imports(path.read_text(), str(path))
        assert used, f"{path} imports nothing from hwnas"
        assert set(used) == {"hwnas.targets.api"}, f"{path} imports {sorted(set(used))}"


def test_writing_a_target_uses_only_the_api():
    text = (ROOT / "docs" / "writing-a-target.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    # the blocks are fragments (a method, a class body): read their import lines
    used = [m for b in blocks for m in re.findall(r"^\s*(?:from|import) (hwnas[\w.]*)", b, flags=re.M)]
    assert used and set(used) == {"hwnas.targets.api"}, sorted(set(used))


@pytest.mark.parametrize("old, new, name", [
    ("hwnas.targets.analysis", "hwnas.ir.analysis", "planned_memory"),
    ("hwnas.targets.workloads", "hwnas.ir.workloads", "extract"),
    ("hwnas.pipeline.lower", "hwnas.ir.lower", "compile_module"),
])
def test_old_plugin_import_paths_still_work_with_a_warning(old, new, name):
    import importlib

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match="hwnas.targets.api"):
        shim = importlib.import_module(old)
    assert getattr(shim, name) is getattr(importlib.import_module(new), name)
