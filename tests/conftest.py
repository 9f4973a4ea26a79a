"""Test tiers: slow and GPU tests are opt-in."""

from __future__ import annotations

import os

import pytest

# one runtime thread unless a test asks for more: CI has two cores
os.environ.setdefault("TVM_NUM_THREADS", "2")


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")
    parser.addoption("--run-gpu", action="store_true", help="also run tests marked gpu (needs CUDA)")


def pytest_collection_modifyitems(config, items):
    for marker, option in (("slow", "--run-slow"), ("gpu", "--run-gpu")):
        if config.getoption(option):
            continue
        skip = pytest.mark.skip(reason=f"{marker} test: opt in with {option}")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)
