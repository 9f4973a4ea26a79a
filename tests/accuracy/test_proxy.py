"""The proxy evaluator: NASWOT and synflow scores on one batch of a freshly initialised network."""

from __future__ import annotations

import json
import math

import pytest

from hwnas.accuracy import AccuracyEvaluator, get_accuracy
from hwnas.arch import get_space

GOOD = (3, 3, 2, 3, 2, 3)  # conv-heavy cell
NONE = (0, 0, 0, 0, 0, 0)  # every edge "none": the cells output zeros


@pytest.mark.parametrize("kind", ["naswot", "synflow"])
def test_proxies_are_deterministic_finite_and_rank_a_real_network_above_a_degenerate_one(kind, small_nb201):
    evaluator = get_accuracy("proxy", kind=kind, batch_size=32)
    assert isinstance(evaluator, AccuracyEvaluator) and evaluator.is_percentage is False
    good = evaluator.evaluate(small_nb201, GOOD)
    again = get_accuracy(f"proxy:{kind}", batch_size=32).evaluate(small_nb201, GOOD)
    none = evaluator.evaluate(small_nb201, NONE)
    skip = evaluator.evaluate(small_nb201, (1,) * 6)
    assert all(isinstance(v, float) and math.isfinite(v) for v in (good, none, skip))
    assert good == again
    assert good > skip > none
    assert evaluator.settings()["kind"] == kind
    json.dumps(evaluator.settings())


def test_synflow_of_a_network_whose_cells_output_zeros_is_zero(small_nb201):
    # no path from the input to the output: every weight's synaptic flow is 0, and ln(1 + 0) = 0
    assert get_accuracy("proxy:synflow").evaluate(small_nb201, NONE) == 0.0


def test_proxies_handle_relu6_networks():
    space = get_space("mbv2", resolutions=(64,), widths=(0.5,))
    small = [0, 0, 0] * 6 + [0, 0]
    large = [2, 2, 3] * 6 + [0, 0]
    for kind in ("naswot", "synflow"):
        evaluator = get_accuracy("proxy", kind=kind, batch_size=16)
        assert evaluator.evaluate(space, large) > evaluator.evaluate(space, small)
