"""Helpers shared by the architecture-space tests: ONNX export and checks."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from hwnas.arch.base import ArchSpace
from hwnas.data import require_data_file
from hwnas.errors import DataNotFoundError

#: ONNX operators the spaces may produce (standard ones the TVM importer takes)
STANDARD_OPS = frozenset({
    "Conv", "BatchNormalization", "Relu", "Clip", "Add", "Mul", "AveragePool",
    "GlobalAveragePool", "ReduceMean", "Gemm", "MatMul", "Flatten", "Reshape",
    "Transpose", "Concat", "Pad", "Constant", "Identity",
})


def calibrate_batchnorm(model: torch.nn.Module, input_shape: Sequence[int], seed: int) -> None:
    """Give every BN layer the statistics of a random batch and random affine terms.

    With torch's default initialisation the signal of a deep untrained network
    fades to nothing, so every input gives the same output and comparing
    runtimes proves little; normalised activations keep it alive.
    """
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one batch sets the statistics
    model.train()
    with torch.no_grad():
        model(torch.randn(4, *input_shape[1:], generator=gen))
        for m in norms:
            m.weight.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.bias.copy_(0.1 * torch.randn(m.num_features, generator=gen))
    model.eval()


def export_onnx(model: torch.nn.Module, x: torch.Tensor, path: Path) -> onnx.ModelProto:
    """Export ``model`` as the pipeline does and return the loaded, checked ONNX model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (x,), str(path), dynamo=False, opset_version=17,
            input_names=["input"], output_names=["output"],
        )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    return proto


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return session.run(["output"], {"input": x})[0]


def check_genome(space: ArchSpace, genome: Sequence[int], tmp_path: Path, *, seed: int = 0) -> Path:
    """Build ``genome``, check the output shape, export it, compare ONNX Runtime with torch;
    return the ONNX file."""
    model = space.build(genome, seed=seed)
    shape = space.input_shape(genome)
    calibrate_batchnorm(model, shape, seed)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = model(x)
    assert tuple(expected.shape) == (shape[0], space.num_classes)
    assert torch.isfinite(expected).all()
    path = tmp_path / f"{space.name}_{'_'.join(map(str, genome))}.onnx"
    proto = export_onnx(model, x, path)
    got = run_onnx(path, x.numpy())
    # within 1e-4 of the output's scale (cells that sum several paths make outputs large)
    ref = expected.numpy()
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * scale)
    ops = {n.op_type for n in proto.graph.node}
    assert ops <= STANDARD_OPS, f"non-standard ONNX ops {sorted(ops - STANDARD_OPS)} for {genome}"
    return path


def import_into_tvm(path: Path) -> object:
    """Import an ONNX file with the TVM Relax ONNX frontend (as the pipeline does)."""
    tvm_onnx = pytest.importorskip("tvm.relax.frontend.onnx")
    return tvm_onnx.from_onnx(onnx.load(str(path)), keep_params_in_input=False)


def data_file(relpath: str) -> Path:
    """A benchmark data file, or skip the test with the reason."""
    try:
        return require_data_file(relpath)
    except DataNotFoundError as err:
        pytest.skip(str(err))


@pytest.fixture
def onnx_check() -> Callable[..., Path]:
    return check_genome


@pytest.fixture
def tvm_import() -> Callable[[Path], object]:
    return import_into_tvm


@pytest.fixture
def bench_file() -> Callable[[str], Path]:
    return data_file


@pytest.fixture
def calibrate() -> Callable[[torch.nn.Module, Sequence[int], int], None]:
    return calibrate_batchnorm
