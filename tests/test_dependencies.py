"""Every third-party module hwnas imports (at any level of a file) is declared in pyproject.toml: in
``dependencies``, or in an extra for the optional ones (cluster executors, CUDA bindings)."""

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: import name -> distribution name, where they differ
DISTRIBUTION = {"sklearn": "scikit-learn", "PIL": "pillow", "tvm": "apache-tvm", "tvm_ffi": "apache-tvm-ffi",
                "cuda": "cuda-bindings", "yaml": "pyyaml"}


def _imports() -> dict[str, set[str]]:
    """Top-level module name -> files of hwnas that import it (every import statement, function-level too)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "hwnas").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(reqs):
        return {re.match(r"[A-Za-z0-9._-]+", r).group(0).lower().replace("_", "-") for r in reqs}

    return names(project["dependencies"]), names(r for extra in project["optional-dependencies"].values()
                                                 for r in extra)


def test_every_imported_third_party_module_is_declared():
    required, optional = _declared()
    missing = {}
    for module, files in _imports().items():
        if module in sys.stdlib_module_names or module == "hwnas" or module.startswith("_"):
            continue
        dist = DISTRIBUTION.get(module, module).lower().replace("_", "-")
        if dist not in required | optional:
            missing[module] = sorted(files)
    assert not missing, f"imported but not declared in pyproject.toml (module: files): {missing}"


def test_the_scan_sees_the_imports():
    imports = _imports()
    assert {"numpy", "tvm", "torch", "onnx", "sklearn"} <= set(imports)
    assert "hwnas/cost/roofline.py" in imports["threadpoolctl"]  # a function-level import
