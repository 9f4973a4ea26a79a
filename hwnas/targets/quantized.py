"""What the targets with quantization knobs share: the quantization and weight-packing passes, the deployed
network for accuracy, the modelled packed weight size.

The knobs are declared by :func:`hwnas.hss.quant.quantization_params`; the
rewrite is :class:`hwnas.passes.quantize.QuantizeModule` with the spec of
:meth:`hwnas.passes.quantize.QuantSpec.from_config`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.hss.quant import KNOBS
from hwnas.util import filtered_native_stderr


class QuantizedDeployment:
    """Mixin of the targets whose quantization knobs change what the device computes (``cpu``, ``mcu:``).

    ``default_spec`` is the numerics of a config that asks for no quantization
    (None: the float network, as on ``cpu``; an int8 spec on ``mcu:``).
    """

    deployment_knobs = KNOBS
    #: calibration of the quantization pass when a module is compiled for cost or a bundle (the accuracy
    #: hook calibrates on the evaluator's own training images)
    calibration_source = "digits"
    calibration_count = 16

    @property
    def default_spec(self):
        return None

    def quant_spec(self, hw: dict[str, Any]):
        from hwnas.passes.quantize import QuantSpec

        return QuantSpec.from_config(hw) or self.default_spec

    def quantize_passes(self, hw: dict[str, Any]) -> list:
        """The quantization pass the config asks for, then the packing of its 4- and 2-bit weights (two and
        four per byte, decoded inside the kernels: :mod:`hwnas.passes.pack_weights`); none for the float
        network."""
        from hwnas.passes.pack_weights import PackWeights
        from hwnas.passes.quantize import QuantizeModule

        spec = self.quant_spec(hw)
        if spec is None:
            return []
        batch = getattr(self, "calibration_data", None)
        if batch is not None:  # the network's own training images (calibrate_with)
            return [QuantizeModule(batch, spec=spec), PackWeights()]
        return [QuantizeModule(source=self.calibration_source, count=self.calibration_count, spec=spec),
                PackWeights()]

    def calibrate_with(self, batch: np.ndarray) -> None:
        """Calibrate the quantization pass on ``batch`` (training images of the network's data, at its input
        shape) instead of ``calibration_source``."""
        self.calibration_data = np.asarray(batch, dtype=np.float32)

    def deployment_key(self, hw: dict[str, Any]) -> str | None:
        spec = self.quant_spec(hw)
        return None if spec is None else spec.key()

    def deploy_network(self, model, input_shape, calibration: np.ndarray, hw: dict[str, Any]):
        """A function ``float batch (N, ...) -> outputs`` of the quantized network, as the device computes it
        (see :func:`deploy_network`)."""
        return deploy_network(model, input_shape, calibration, self.quant_spec(hw))


def deploy_network(model, input_shape, calibration: np.ndarray, spec):
    """A function ``float batch (N, ...) -> outputs`` of ``model`` quantized by ``spec`` as a target runs it.

    The trained ``model`` is exported to ONNX, quantized with ``calibration``
    (the evaluator's training images, never its test split), compiled for the
    host and run in the VM one input at a time; integer outputs are
    dequantized. The integer module computes the same integers whatever
    schedule a target gives it (``tests/targets/test_quant.py`` checks the CPU
    build against this one and against numpy).
    """
    import tvm
    from tvm import relax

    from hwnas.passes.quantize import QuantizeModule, quantization_info, quantize_input
    from hwnas.ir import lower

    with tempfile.TemporaryDirectory(prefix="hwnas-quant-acc-") as tmp:
        path = lower.export_onnx(model.eval(), input_shape, Path(tmp) / "model.onnx")
        mod = lower.to_relax(lower.load_onnx(path))
    mod = QuantizeModule(calibration, spec=spec)(mod)
    info = quantization_info(mod)
    with filtered_native_stderr():
        ex = lower.compile_module(lower.fuse(mod), tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(ex, tvm.cpu())

    def run(batch: np.ndarray) -> np.ndarray:
        outs = []
        for x in np.asarray(batch, dtype=np.float32):
            y = vm["main"](tvm.runtime.tensor(quantize_input(x[None], info["input_scale"],
                                                             info["activation_bits"]))).numpy()
            scale = info["output_scale"]
            outs.append(y.astype(np.float32) * scale if scale is not None else y)
        return np.concatenate(outs, axis=0)

    return run


def packed_param_bytes(param_bytes: int, info: dict[str, Any] | None) -> float:
    """``param_bytes`` (as compiled) with the quantized layers' weights counted at their bit-widths, as if
    packed: a **model**; the compiled module packs 4- and 2-bit weights but stores 6- and 8-bit ones in a byte
    (and weight-only rounding in a float)."""
    if info is None:
        return float(param_bytes)
    return float(param_bytes - info.get("weight_bytes_stored", 0) + info.get("weight_bytes_packed", 0))
