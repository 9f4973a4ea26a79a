"""Test tiers (slow and GPU tests are opt-in), and the example target plugin installed for the session."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

EXAMPLE_PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "hwnas-example-dsp"

# one runtime thread unless a test asks for more: CI has two cores
os.environ.setdefault("TVM_NUM_THREADS", "2")


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")
    parser.addoption("--run-gpu", action="store_true", help="also run tests marked gpu (needs CUDA)")


def install_example_plugin(cache_root: Path) -> Path:
    """pip-install the example plugin package into a folder of its own (by content hash; reused when unchanged)."""
    digest = hashlib.sha256()
    for f in sorted(EXAMPLE_PLUGIN.rglob("*")):
        rel = f.relative_to(EXAMPLE_PLUGIN)
        if f.is_file() and not {"__pycache__", "build"} & set(rel.parts) and ".egg-info" not in str(rel):
            digest.update(f.relative_to(EXAMPLE_PLUGIN).as_posix().encode() + f.read_bytes())
    folder = cache_root / digest.hexdigest()[:16]
    if not (folder / "hwnas_example_dsp").is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--target", str(folder), str(EXAMPLE_PLUGIN)], check=True, capture_output=True)
    return folder


def pytest_configure(config):
    # the example out-of-tree backend, installed as a package: this process and every subprocess see its
    # entry point, so the conformance suite and the CLI tests cover it like any installed plugin
    cache = getattr(config, "cache", None)  # absent with -p no:cacheprovider
    root = Path(cache.mkdir("hwnas-example-plugin")) if cache is not None else \
        Path(tempfile.gettempdir()) / "hwnas-example-plugin"
    folder = install_example_plugin(root)
    sys.path.insert(0, str(folder))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)


@contextlib.contextmanager
def _flock(path: Path, mode: int):
    with open(path, "a+") as fh:
        fcntl.flock(fh, mode)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Under pytest-xdist (scripts/test.sh runs two workers), a test marked ``timing`` compares wall-clock
    measurements and runs alone: it waits for the other worker's test to end (fixture set-up and tear-down
    included) and holds it back until it is done. A writer-preferring lock over files: every test passes a
    turnstile; a timing test keeps the turnstile and takes the main lock exclusively, the others share it."""
    worker = getattr(item.config, "workerinput", None)
    if worker is None:
        yield
        return
    folder = Path(tempfile.gettempdir()) / f"hwnas-tests-{worker['testrunuid']}"
    folder.mkdir(exist_ok=True)
    turnstile, main = folder / "turnstile", folder / "main"
    if "timing" in item.keywords:
        with _flock(turnstile, fcntl.LOCK_EX), _flock(main, fcntl.LOCK_EX):
            yield
        return
    with contextlib.ExitStack() as stack:
        with _flock(turnstile, fcntl.LOCK_EX):
            stack.enter_context(_flock(main, fcntl.LOCK_SH))
        yield


def pytest_collection_modifyitems(config, items):
    for marker, option in (("slow", "--run-slow"), ("gpu", "--run-gpu")):
        if config.getoption(option):
            continue
        skip = pytest.mark.skip(reason=f"{marker} test: opt in with {option}")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def cli(capsys):
    """Run ``hwnas ARGS...`` in this process: ``cli(*argv) -> (exit code, stdout, stderr)``."""
    from hwnas.cli.commands import main

    def run(*argv):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run
