"""One suite for every registered target: built-ins and installed plugins (the example plugin included).

What every backend must honour, whatever its device: its hardware space
validates, samples, encodes and decodes; its passes compose and a small
network builds; its costs are declared metrics, positive, and deterministic
unless they are measurements; its artifact is written and verifiable.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hwnas.data import data_dir
from hwnas.errors import HwnasError
from hwnas.metrics import METRICS
from hwnas.pipeline.artifacts import verify_bundle, write_bundle
from hwnas.pipeline.evaluate import Candidate, evaluate
from hwnas.ir.lower import export_onnx
from hwnas.targets import get_target, target_class, target_names

#: cost methods whose result is a measurement (allowed to vary between calls)
MEASURED = ("measure", "lut")


def all_specs() -> list[str]:
    specs = []
    for name in target_names():
        cls = target_class(name)
        specs += [f"{name}:{v}" for v in cls.variants] if cls.variants else [name]
    return specs


def first_specs() -> list[str]:
    """One instance per target class: the expensive checks run once per backend."""
    return [f"{n}:{target_class(n).variants[0]}" if target_class(n).variants else n for n in target_names()]


def test_the_example_plugin_is_registered():
    assert "exdsp" in target_names(), "tests/conftest.py installs examples/hwnas-example-dsp for the session"


@pytest.mark.parametrize("spec", all_specs())
def test_contract_attributes_and_space(spec):
    t = get_target(spec)
    assert t.name and t.description and t.spec == spec
    assert t.metrics and set(t.metrics) <= set(METRICS), "metrics outside hwnas's vocabulary"
    assert t.cost_methods and t.cost_method(None) == t.cost_methods[0]
    hs = t.hardware_space
    default = hs.validate({})
    assert set(default) == set(hs.params)
    rng = np.random.default_rng(0)
    for _ in range(5):
        cfg = hs.sample(rng)
        assert hs.validate(cfg) == cfg
        assert hs.decode(hs.encode(cfg)) == cfg
    for name, param in hs.params.items():
        assert param.doc, f"knob {name} has no documentation"
    with pytest.raises(HwnasError):
        hs.validate({"no_such_knob_anywhere": 1})


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
            torch.nn.Linear(16, 10))

    def forward(self, x):
        return self.body(x)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    return export_onnx(_Tiny().eval(), (1, 3, 16, 16), tmp_path_factory.mktemp("conf") / "tiny.onnx")


def _check_values(t, values):
    assert values, "no metrics"
    assert set(values) <= set(t.metrics) | {"macs"}, f"undeclared metrics {set(values) - set(t.metrics)}"
    for k, v in values.items():
        assert math.isfinite(v) and v >= 0, f"{k} = {v}"
    assert any(v > 0 for k, v in values.items() if k != "macs")


@pytest.mark.parametrize("spec", first_specs())
def test_builds_costs_and_emits(spec, tiny_onnx, tmp_path):
    t = get_target(spec)
    if t.measure_options is not None:
        t.set_measure_options(repeats=3, min_repeat_ms=5)
    if not t.compiles:
        pytest.importorskip("csv")
        if not (data_dir() / "nb201" / "latency.csv").is_file():
            pytest.skip("published data absent")
        from hwnas.arch import get_space

        space = get_space("nb201")
        genome = space.sample(np.random.default_rng(1))
        hw = t.hardware_space.validate({})
        for method in t.cost_methods:
            a = t.cost_architecture(space, genome, hw, method=method)
            _check_values(t, a)
            assert a == t.cost_architecture(space, genome, hw, method=method)
        return
    hw = t.hardware_space.sample(np.random.default_rng(2))
    cand = Candidate.from_onnx(tiny_onnx, hw)
    for method in t.cost_methods:
        if method == "predictor":
            continue  # needs a trained model: tests/cost/test_costmodels.py
        try:
            t.cost_method(method)
        except HwnasError as exc:  # e.g. measure without the device: must be said in one line
            assert "\n" not in str(exc)
            continue
        ev = evaluate(cand, t, cost=method)
        _check_values(t, ev.metrics)
        if method not in MEASURED:
            assert t.cost(ev.built, method=method) == t.cost(ev.built, method=method), f"{method} not deterministic"
    manifest = verify_bundle(write_bundle(ev, tmp_path / "bundle").parent)
    assert manifest["target"] == spec and manifest["hw"] == t.hardware_space.validate(hw)
    assert (tmp_path / "bundle" / manifest["runtime"]["library"]).is_file()
