"""Helpers shared by the CPU schedule-pass tests: tiny nets, configs, the pipeline, checks.

Every net is exported to ONNX once per session. ``pipeline`` runs the real
flow: import -> graph passes -> fuse -> schedule passes -> ``compile_module``
-> ``relax.VirtualMachine``, and compares with ONNX Runtime on the same file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

#: A complete CPU hardware config; tests override some keys.
DEFAULT_CONFIG: dict[str, Any] = {
    "layout": "NCHW",
    "pack": 8,
    "tile_oc": 8,
    "tile_oh": 1,
    "tile_ow": 8,
    "tile_rc": 4,
    "loop_order": "oc_outer",
    "parallel": "outer2",
    "vector_width": 8,
    "unroll": 64,
    "num_threads": 2,
}


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(16, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.b(torch.relu(self.a(x))))


class _InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project, residual add."""

    def __init__(self, c: int = 8, t: int = 3) -> None:
        super().__init__()
        h = c * t
        self.body = nn.Sequential(
            nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
            nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
            nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _Glue(nn.Module):
    """A conv followed by pooling, concatenation, elementwise ops and a global mean."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        y = torch.cat([nn.functional.max_pool2d(y, 2), nn.functional.avg_pool2d(y, 2)], 1)
        y = torch.sigmoid(y) * y
        return y.mean((2, 3))


class _DenseBlock(nn.Module):
    """A stem conv, then two DenseNet layers: batch norm, ReLU and a conv on the concatenation of all earlier
    maps (the batch norms follow a concatenation, not a conv, so the exporter cannot fold them)."""

    def __init__(self, c: int = 16, growth: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(c + i * growth), nn.ReLU(), nn.Conv2d(c + i * growth, growth, 3, padding=1,
                                                                                bias=False))
            for i in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = torch.cat([x, layer(x)], 1)
        return x


class _ChannelMean(nn.Module):
    """A channel mean multiplied into a packable conv's output: TVM's ConvertLayout fails on it."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 16, 3, padding=1)
        self.c = nn.Conv2d(16, 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(x))
        z = torch.sigmoid(self.b(y)) * y.mean(1, keepdim=True)
        return self.c(z)


class _OddChannels(nn.Module):
    """36 channels (padded to 40 under pack 8) through convs, a residual add, ReLU, sigmoid and a mean."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(8, 36, 3, padding=1)
        self.b = nn.Conv2d(36, 36, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(x))
        return torch.sigmoid(y + self.b(y)).mean((2, 3))


class _Batched(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 20)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.fc(x))  # (1, 5, 20)
        return torch.matmul(y.transpose(1, 2), y)  # (1, 20, 20), both operands activations


def _relu(conv: nn.Module) -> nn.Module:
    return nn.Sequential(conv, nn.ReLU())


def _odd_stages() -> nn.Module:
    """SqueezeNet's and ResNet's odd map sizes: 3x3 convs (bias, ReLU) at 27x27, then 13x13, then 7x7."""
    return nn.Sequential(
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1),
        nn.Conv2d(16, 24, 3, padding=1), nn.ReLU(),
    )


#: name -> (factory, input shape). Channel counts and sizes are deliberately not
#: multiples of the tiles.
NETS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    # regular 3x3, padded, 12 -> 20 channels at 10x10
    "conv": (lambda: _relu(nn.Conv2d(12, 20, 3, padding=1)), (1, 12, 10, 10)),
    "odd": (lambda: _relu(nn.Conv2d(6, 10, 3, padding=1)), (1, 6, 8, 8)),
    # a network's stem: 3 colour channels, strided 3x3 to 16, ReLU, then a 1x1
    "stem": (lambda: nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 1)),
             (1, 3, 15, 15)),
    # strided, odd input size, no bias, no activation
    "strided": (lambda: nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), (1, 8, 11, 11)),
    # dilated along the width, padding different per axis, odd sizes
    "dilated": (lambda: nn.Conv2d(8, 16, 3, padding=(1, 2), dilation=(1, 2)), (1, 8, 9, 10)),
    # depthwise, stride 1 then stride 2, with ReLU6
    "depthwise": (
        lambda: nn.Sequential(
            nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU6(),
            nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16),
        ),
        (1, 16, 9, 9),
    ),
    # pointwise 1x1, 16 -> 24 at 7x7
    "pointwise": (lambda: nn.Conv2d(16, 24, 1), (1, 16, 7, 7)),
    # grouped 3x3 (3 groups), padded
    "grouped": (lambda: nn.Conv2d(12, 12, 3, padding=1, groups=3), (1, 12, 6, 6)),
    # 3x3 convs with odd output sizes: 27x27, 13x13, 7x7 (max-pools between)
    "odd_stages": (_odd_stages, (1, 8, 27, 27)),
    # a 3x3 conv whose output is 14 rows by 13 columns
    "rows14_cols13": (lambda: _relu(nn.Conv2d(12, 20, 3, padding=1)), (1, 12, 14, 13)),
    # two packable 3x3 convs and a residual add
    "residual": (_Residual, (1, 16, 8, 8)),
    # MobileNetV2 inverted residual with folded batch norms and ReLU6
    "mbv2": (_InvertedResidual, (1, 8, 8, 8)),
    # linear layers: 48 -> 20 -> 10
    "linear": (
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(48, 20), nn.ReLU(), nn.Linear(20, 10)),
        (1, 3, 4, 4),
    ),
    # a linear layer on the last axis of a 3-D tensor (a batched matmul) and a matmul of activations
    "batched": (lambda: _Batched(), (1, 5, 12)),
    # pooling, concat, elementwise, global mean
    "glue": (_Glue, (1, 3, 32, 32)),
    # an inverted residual expanding 24 -> 72 channels (padded to 80 under pack 16)
    "expand72": (lambda: _InvertedResidual(24, 3), (1, 24, 8, 8)),
    # 36 channels (padded to 40 under pack 8) into a residual add and a global mean
    "odd_channels": (_OddChannels, (1, 8, 6, 6)),
    # 3x3 convs on maps large enough for Winograd F(4x4, 3x3): 28x28 (whole tiles), then 29x29 (a partial last tile)
    "large_maps": (lambda: nn.Sequential(_relu(nn.Conv2d(8, 16, 3, padding=1)), nn.Conv2d(16, 16, 3, padding=1)),
                   (1, 8, 28, 28)),
    "large_maps_odd": (lambda: _relu(nn.Conv2d(8, 16, 3, padding=1)), (1, 8, 29, 29)),
    # DenseNet: batch norms after concatenations
    "dense_block": (_DenseBlock, (1, 3, 8, 8)),
    # a 3x3 conv whose input (8 x 18 x 18 padded) outweighs its weights (16 x 8 x 3 x 3): rows split per thread
    "wide_map": (lambda: _relu(nn.Conv2d(8, 16, 3, padding=1)), (1, 8, 16, 16)),
    # a graph TVM's ConvertLayout cannot convert with every conv packed
    "channel_mean": (_ChannelMean, (1, 8, 6, 6)),
}


def make_config(**overrides: Any) -> dict[str, Any]:
    """A full CPU config dict with ``overrides`` applied."""
    return {**DEFAULT_CONFIG, **overrides}


class Pipeline:
    """The hwnas CPU flow on one ONNX file, in steps the tests can stop between."""

    def __init__(self, onnx_dir: Path) -> None:
        import tvm

        self.onnx_dir = onnx_dir
        self.target = tvm.target.Target(
            {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num-cores": 2}
        )

    def onnx(self, name: str) -> Path:
        """The ONNX file of net ``name`` (exported on first use; weights seeded)."""
        from hwnas.ir.lower import export_onnx

        path = self.onnx_dir / f"{name}.onnx"
        if not path.exists():
            factory, shape = NETS[name]
            torch.manual_seed(0)
            model = factory().eval()
            for m in model.modules():  # non-trivial batch-norm statistics to fold
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 1.5)
                    m.weight.data.uniform_(0.5, 1.5)
                    m.bias.data.uniform_(-0.5, 0.5)
            export_onnx(model, shape, path)
        return path

    def relax(self, name: str, config: dict[str, Any] | None = None):
        """The imported module, after the graph passes of ``config`` (none when it is None)."""
        import tvm

        from hwnas.targets.cpu.passes import cpu_graph_passes
        from hwnas.ir.lower import load_onnx, to_relax

        mod = to_relax(load_onnx(self.onnx(name)))
        if config is not None:
            mod = tvm.transform.Sequential(cpu_graph_passes(config))(mod)
        return mod

    def fused(self, name: str, config: dict[str, Any] | None = None):
        """The fused module (graph passes of ``config`` applied first)."""
        from hwnas.ir.lower import fuse

        return fuse(self.relax(name, config))

    def schedule(self, mod, passes):
        """Run schedule passes on a fused module under the target."""
        import tvm

        with self.target:
            return tvm.transform.Sequential(list(passes))(mod)

    def scheduled(self, name: str, config: dict[str, Any]):
        """The fused module of ``name`` with all CPU passes of ``config`` applied."""
        from hwnas.targets.cpu.passes import cpu_schedule_passes

        return self.schedule(self.fused(name, config), cpu_schedule_passes(config))

    def compile(self, mod):
        from hwnas.ir.lower import compile_module

        return compile_module(mod, self.target)

    def run(self, name: str, ex) -> tuple[np.ndarray, np.ndarray]:
        """Output of the compiled ``ex`` and of ONNX Runtime on the same random input."""
        import onnxruntime as ort
        import tvm
        from tvm import relax

        shape = NETS[name][1]
        x = np.random.default_rng(1).standard_normal(shape).astype("float32")
        vm = relax.VirtualMachine(ex, tvm.cpu())
        out = vm["main"](tvm.runtime.tensor(x)).numpy()
        (ref,) = ort.InferenceSession(str(self.onnx(name))).run(None, {"input": x})
        return out, ref

    def check_numerics(self, name: str, config: dict[str, Any] | None) -> None:
        """The whole pipeline for ``config`` (unscheduled when None) matches ONNX Runtime."""
        mod = self.fused(name) if config is None else self.scheduled(name, config)
        out, ref = self.run(name, self.compile(mod))
        assert out.shape == ref.shape
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """The shared :class:`Pipeline` (ONNX files in a session temp folder)."""
    return Pipeline(tmp_path_factory.mktemp("pass-nets"))


@pytest.fixture
def config() -> Callable[..., dict[str, Any]]:
    """``config(**overrides)``: a full CPU hardware config."""
    return make_config


def scheduled_by(mod, pass_name: str) -> list[str]:
    """Names of the PrimFuncs of ``mod`` that ``pass_name`` scheduled."""
    from hwnas.ir.schedule import SCHEDULED_ATTR
    from hwnas.ir.lower import prim_funcs

    return sorted(
        name for name, f in prim_funcs(mod).items()
        if f.attrs is not None and SCHEDULED_ATTR in f.attrs and str(f.attrs[SCHEDULED_ATTR]) == pass_name
    )


def loops_of(func, block_name: str) -> list[tuple[int, str]]:
    """(extent, kind) of the loops around block ``block_name`` of ``func``, outermost first."""
    import tvm
    from tvm import s_tir

    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    loops = sch.get_loops(sch.get_sblock(block_name))
    kinds = {0: "serial", 1: "parallel", 2: "vectorized", 3: "unrolled"}
    return [(int(sch.get(lp).extent), kinds.get(int(sch.get(lp).kind), "other")) for lp in loops]


@pytest.fixture
def structure() -> Any:
    """Structural helpers: ``structure.scheduled_by(mod, name)``, ``structure.loops_of(func, block)``."""

    class _Structure:
        scheduled_by = staticmethod(scheduled_by)
        loops_of = staticmethod(loops_of)

    return _Structure()


def _tuning_net(second_channels: int) -> nn.Module:
    torch.manual_seed(second_channels)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, second_channels, 1), nn.ReLU(), nn.Flatten(),
        nn.Linear(second_channels * 10 * 10, 10)).eval()


@pytest.fixture
def tuning_onnx(tmp_path) -> Callable[[int], Path]:
    """``make(c)``: the ONNX file of a 3x3 conv (3 -> 16), a 1x1 conv (16 -> c) and a dense, on 10x10 inputs.

    Networks with different ``c`` share the first conv's workload (what the tuning tests reuse).
    """
    from hwnas.ir.lower import export_onnx

    return lambda c: export_onnx(_tuning_net(c), (1, 3, 10, 10), tmp_path / f"tuning{c}.onnx")


@pytest.fixture
def matches_ort() -> Callable[[Any, Path], None]:
    """``check(evaluation, onnx_path)``: the evaluated artifact's output equals ONNX Runtime's (1e-4)."""
    import onnxruntime as ort

    from hwnas.ir.runtime import random_inputs, run_vm

    def check(ev, path: Path) -> None:
        x = list(random_inputs(ev.built.inputs, seed=5).values())
        ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x[0]})[0]
        np.testing.assert_allclose(run_vm(ev.built.executable, x)[0], ref, rtol=1e-4, atol=1e-4)

    return check
