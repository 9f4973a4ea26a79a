"""Microcontrollers (``mcu:<board>``): int8 networks as self-contained C for Cortex-M.

The path of a candidate:

* graph passes: :class:`~hwnas.passes.quantize.QuantizeModule` (post-training
  int8 quantization calibrated on data: per-channel weights, per-tensor
  activations; the compiled TIR is the integer computation), then
  :class:`~hwnas.passes.pack_weights.PackWeights` (4- and 2-bit weights
  packed, decoded in the kernels' weight loads);
* schedule pass: :class:`~hwnas.targets.mcu.schedule_mcu.ScheduleMcu` (stages
  inlined, the accumulator tiled over ``tile`` channels, zero padding inline
  or buffered);
* build: TVM's C code of the kernels (and, when asked, the host LLVM build
  of the same int8 module: the reference); the memory plan
  (:mod:`hwnas.targets.mcu.plan`: execution order, in-place depthwise, one
  arena);
* cost (``model``, the default): ``peak_memory_kb`` = arena (activations,
  input and output) + the largest kernel workspace (heap and stack arrays of
  the generated C); ``flash_kb`` = text + data of ``model.o`` and
  ``kernels.o`` cross-compiled with ``arm-none-eabi-gcc -O2`` (weights and
  code), by ``arm-none-eabi-size``; ``latency_ms`` = an **estimate** from
  :data:`CYCLE_MODEL`; ``emulate`` builds the whole bundle and runs it under
  QEMU with ``-icount`` (one virtual ns per instruction): the instruction count
  times the core's CPI;
* emit: the C bundle (:mod:`hwnas.targets.mcu.bundle`), the host reference
  library ``model.so`` and the expected output of the bundle's input.

HSS knobs: ``exec_order`` (``program`` or ``min_memory``), ``inplace_dw``,
``tile``, ``tile_rows`` and ``pad`` (see :mod:`hwnas.targets.mcu.schedule_mcu`);
quantization (:mod:`hwnas.hss.quant`): weight bits 8/6/4/2 by layer group,
int8 or int16 activations, symmetric or asymmetric weights; 4- and 2-bit
weights are stored packed (two or four per byte, :mod:`hwnas.passes.pack_weights`)
and decoded inside the kernels, so ``params_kb`` and ``flash_kb`` shrink with
them; 6-bit weights are stored one per byte (``params_packed_kb`` counts them
at 6 bits: a model). Patch-based
execution of the first stages (MCUNetV2) is not implemented.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import CompileError, InvalidConfigError
from hwnas.hss import ChoiceParam, HardwareSpace
from hwnas.ir import analysis
from hwnas.targets.base import Built, Target
from hwnas.targets.quantized import QuantizedDeployment
from hwnas.targets.mcu.boards import BOARDS, Board, get_board
from hwnas.util import error_line, filtered_native_stderr

#: weight storage x activation width of a kernel (:func:`kernel_storage`): ``w8`` one weight per byte (8-
#: and 6-bit layers), ``w4``/``w2`` packed (:mod:`hwnas.passes.pack_weights`, decoded in the weight load);
#: ``a8``/``a16`` int8/int16 activations
STORAGES = ("w8a8", "w8a16", "w4a8", "w2a8", "w4a16", "w2a16")
#: (instructions per multiply-accumulate, per output element) of TVM's scalar C kernels compiled with
#: arm-none-eabi-gcc 12 -O2 for Thumb-2, by kernel kind, pad mode and storage: least-squares fits of
#: per-kernel instruction counts measured under QEMU 7.2 (mps2-an500, -icount shift=0) on 3 seeded mbv2
#: networks (64/96 px, width 0.35/0.5), symmetric weights, 2026-11-27 (benchmarks/mcu_cycle_model.py).
#: Whole-network error of the estimate against the emulated count (mean / max over both pad modes): on the
#: fitted networks w8a8 4.9 % / 9.4 %, w8a16 6.6 / 12.8, w4a8 3.0 / 5.5, w2a8 2.8 / 4.7; on a held-out
#: network 7.2 / 9.9, 8.7 / 13.8, 4.6 / 6.2, 4.2 / 5.0. Rows not measured: ``w4a16``/``w2a16`` are the
#: ``a8`` row plus the ``w8a16`` - ``w8a8`` difference (11.5 % / 19.2 % on the held-out network);
#: asymmetric (offset) weights use the symmetric row (9.0 % / 11.3 %, underestimated).
INSTRUCTIONS_PER_MAC = {
    ("conv2d", "inline", "w8a8"): (7.75, 91.4),
    ("conv2d", "inline", "w8a16"): (9.43, 203.9),
    ("conv2d", "inline", "w4a8"): (13.92, 101.9),
    ("conv2d", "inline", "w2a8"): (13.69, 88.1),
    ("conv2d", "buffer", "w8a8"): (8.15, 62.5),
    ("conv2d", "buffer", "w8a16"): (8.29, 70.5),
    ("conv2d", "buffer", "w4a8"): (14.15, 62.4),
    ("conv2d", "buffer", "w2a8"): (14.18, 66.0),
    ("depthwise_conv2d", "inline", "w8a8"): (15.19, 98.7),
    ("depthwise_conv2d", "inline", "w8a16"): (32.81, 102.8),
    ("depthwise_conv2d", "inline", "w4a8"): (23.18, 73.4),
    ("depthwise_conv2d", "inline", "w2a8"): (24.7, 79.2),
    ("depthwise_conv2d", "buffer", "w8a8"): (11.01, 69.1),
    ("depthwise_conv2d", "buffer", "w8a16"): (10.83, 68.4),
    ("depthwise_conv2d", "buffer", "w4a8"): (17.09, 80.3),
    ("depthwise_conv2d", "buffer", "w2a8"): (18.53, 89.5),
    ("dense", "inline", "w8a8"): (6.05, 0.0),
    ("dense", "inline", "w8a16"): (6.06, 0.0),
    ("dense", "inline", "w4a8"): (12.06, 0.0),
    ("dense", "inline", "w2a8"): (13.06, 0.0),
    ("dense", "buffer", "w8a8"): (6.05, 0.0),
    ("dense", "buffer", "w8a16"): (6.06, 0.0),
    ("dense", "buffer", "w4a8"): (12.06, 0.0),
    ("dense", "buffer", "w2a8"): (13.06, 0.0),
}
#: instructions per element of a kernel without weights (requantization, pooling sums), by activation width
INSTRUCTIONS_PER_ELEMENT = {"a8": 9.6, "a16": 13.5}
#: cycles per instruction of integer loop code: Cortex-M4 issues one instruction per cycle with 2-cycle
#: loads (Arm Cortex-M4 Technical Reference Manual r0p1, 2010, ch. 3 "Instruction timing"); Cortex-M7
#: dual-issues (Arm Cortex-M7 Technical Reference Manual r1p2, 2018, 1.2 "Features"); the values assume
#: zero-wait-state memories (TCM / flash accelerator), as on the listed boards
CYCLES_PER_INSTRUCTION = {"cortex-m4": 1.25, "cortex-m7": 0.8}
CYCLE_MODEL = (
    "latency_ms is an estimate: instructions (per-MAC and per-element counts of the generated C, measured "
    "under QEMU -icount) x cycles per instruction of the core / clock"
)


@dataclasses.dataclass
class McuBuilt(Built):
    """A module built for a microcontroller: the host reference plus what the C bundle needs."""

    c_source: str = ""
    graph: Any = None
    plan: Any = None
    #: largest kernel workspace: TVMBackendAllocWorkspace bytes and stack arrays
    workspace_heap: int = 0
    workspace_stack: int = 0
    quantization: dict[str, Any] = dataclasses.field(default_factory=dict)
    workloads: list[Any] = dataclasses.field(default_factory=list)


class _BoardNames:
    """The registered boards, read when asked (a plugin may add boards after import)."""

    def __get__(self, obj, owner) -> tuple[str, ...]:
        return tuple(sorted(BOARDS))


class McuTarget(QuantizedDeployment, Target):
    """A Cortex-M board: int8 kernels as C, planned SRAM, cross-built flash, estimated latency."""

    name = "mcu"
    description = "Cortex-M microcontroller: int8 C bundle, planned SRAM, flash from arm-none-eabi, latency estimate"
    metrics = ("latency_ms", "peak_memory_kb", "flash_kb", "params_kb", "params_packed_kb", "macs")
    #: model: the instruction count estimated from the kernels; emulate: counted by running the firmware in
    #: QEMU (the reference the model is judged against)
    cost_methods = ("model", "emulate")
    reference_cost_method = "emulate"
    variants = _BoardNames()  # type: ignore[assignment]

    @property
    def default_spec(self):
        """A config without quantization knobs runs int8 (weights and activations): the board has no float path."""
        from hwnas.passes.quantize import QuantSpec

        return QuantSpec()

    def __init__(self, variant: str | None = None) -> None:
        self.board: Board = get_board(variant)
        super().__init__(variant)


    @functools.cached_property
    def hardware_space(self) -> HardwareSpace:
        from hwnas.hss.quant import quantization_params
        from hwnas.targets.mcu.schedule_mcu import PAD_MODES
        from hwnas.targets.mcu.plan import ORDERS

        return HardwareSpace(
            name=self.spec,
            params={
                "exec_order": ChoiceParam(ORDERS, default_value="min_memory",
                                          doc="kernel execution order (min_memory: networkx search)"),
                "inplace_dw": ChoiceParam(("off", "on"), default_value="on",
                                          doc="depthwise convs write their output over their input"),
                "tile": ChoiceParam((0, 1, 2, 4, 8, 16, 32), default_value=8,
                                    doc="output channels per int32 accumulator tile (0: all)"),
                "tile_rows": ChoiceParam((0, 1, 2, 4, 8), default_value=0,
                                         doc="output rows per accumulator tile of a conv (0: all)"),
                "pad": ChoiceParam(PAD_MODES, doc="zero padding: inline bounds test or a per-tile buffer"),
                **quantization_params(weight_bits=(8, 6, 4, 2), activation_bits=(8, 16)),
            },
        )

    def tvm_target(self, hw: dict[str, Any]):
        import tvm

        return tvm.target.Target({"kind": "llvm"})

    def graph_passes(self, hw: dict[str, Any]) -> list:
        return self.quantize_passes(hw)  # never empty: default_spec is int8 (then PackWeights)

    def schedule_passes(self, hw: dict[str, Any]) -> list:
        from hwnas.targets.mcu.schedule_mcu import ScheduleMcu

        return [ScheduleMcu(hw)]

    # ------------------------------------------------------------------ build
    def build(self, mod, hw: dict[str, Any]) -> McuBuilt:
        from hwnas.passes.quantize import quantization_info
        from hwnas.ir.lower import prim_funcs
        from hwnas.ir import workloads
        from hwnas.targets.mcu import plan as mcu_plan

        quant = quantization_info(mod)
        if quant is None:
            raise CompileError(f"{self.spec}: the module is not quantized (QuantizeModule did not run)")
        tgt = self.tvm_target(hw)
        try:
            with filtered_native_stderr():
                c_source, ws = mcu_plan.compile_c(prim_funcs(mod))
        except Exception as exc:  # TVM's errors are not typed usefully
            raise CompileError(f"compiling for {self.spec} failed: {error_line(exc)}") from None
        graph = mcu_plan.kernel_graph(mod)
        wls = workloads.extract(mod)
        by_func = {w.func: w for w in wls}
        depthwise = {i for i, c in enumerate(graph.calls) if _is_depthwise(by_func.get(c.func))}
        plan = mcu_plan.plan_memory(graph, order_mode=hw["exec_order"], inplace_dw=hw["inplace_dw"] == "on",
                                    depthwise=depthwise)
        used = {c.func for c in graph.calls}
        missing = used - set(ws)
        if missing:
            raise CompileError(f"{self.spec}: no C code for kernel(s) {', '.join(sorted(missing))}")
        inputs, outputs = analysis.io_signature(mod)
        return McuBuilt(
            module=mod, executable=None, tvm_target=tgt, hw=dict(hw), inputs=inputs, outputs=outputs,
            c_source=c_source, graph=graph, plan=plan,
            workspace_heap=max(ws[f]["heap"] for f in used), workspace_stack=max(ws[f]["stack"] for f in used),
            quantization=quant, workloads=wls,
        )

    def capacity(self) -> dict[str, float]:
        """The board's SRAM and flash (KiB): a bundle over either does not link (``will not fit in region RAM``)."""
        return {"peak_memory_kb": float(self.board.sram_kb), "flash_kb": float(self.board.flash_kb)}

    # ------------------------------------------------------------------ cost
    def sram_bytes(self, built: McuBuilt) -> int:
        """Arena (activations) + the largest kernel workspace (heap and stack arrays)."""
        return built.plan.arena_bytes + built.workspace_heap + built.workspace_stack

    def estimated_instructions(self, built: McuBuilt) -> float:
        """The cycle model's instruction count of one inference (see :data:`INSTRUCTIONS_PER_MAC`)."""
        pad = built.hw["pad"]
        calls: dict[str, int] = {}
        for c in built.graph.calls:
            calls[c.func] = calls.get(c.func, 0) + 1
        storage = kernel_storage(built)
        acts = "a16" if built.quantization.get("activation_bits") == 16 else "a8"
        total = 0.0
        for w in built.workloads:
            n = calls.get(w.func, 0)
            kind = "depthwise_conv2d" if _is_depthwise(w) else ("dense" if w.kind == "dense" else "conv2d")
            out_elems = int(np.prod(w.spatial)) if w.spatial else 0
            if w.macs:
                per_mac, per_output = instructions_per_mac(kind, pad, storage.get(w.func, f"w8{acts}"))
                total += n * (w.macs * per_mac + out_elems * per_output)
            else:
                total += n * int(np.prod(w.spatial + w.reduction)) * INSTRUCTIONS_PER_ELEMENT[acts]
        return total

    def latency_from_instructions(self, instructions: float) -> float:
        cycles = instructions * CYCLES_PER_INSTRUCTION[self.board.core]
        return cycles / (self.board.clock_mhz * 1e3)

    def cost(self, built: McuBuilt, *, method: str) -> dict[str, float]:
        method = self.cost_method(method)
        from hwnas.targets.mcu import toolchain as mcu_toolchain
        from hwnas.targets.quantized import packed_param_bytes

        with tempfile.TemporaryDirectory(prefix="hwnas-mcu-") as tmp:
            folder = Path(tmp)
            self.write_c(built, folder)
            if method == "emulate":
                mcu_toolchain.require_tools(qemu=True)
                mcu_toolchain.make(folder, "app.elf")
            else:
                mcu_toolchain.make(folder, "model.o", "kernels.o")
            flash = mcu_toolchain.size(folder / "model.o", folder / "kernels.o").flash
            if method == "emulate":
                from hwnas.targets.mcu.bundle import QEMU_MACHINES, QEMU_SYSCLK_HZ

                run = mcu_toolchain.run_qemu(folder, QEMU_MACHINES[self.board.core], self.board.core)
                instructions = run.ticks * 1e9 / QEMU_SYSCLK_HZ
            else:
                instructions = self.estimated_instructions(built)
        return {
            "latency_ms": self.latency_from_instructions(instructions),
            "peak_memory_kb": self.sram_bytes(built) / 1024,
            "flash_kb": flash / 1024,
            "params_kb": analysis.param_bytes(built.module) / 1024,
            "params_packed_kb": packed_param_bytes(analysis.param_bytes(built.module), built.quantization) / 1024,
        }

    # ------------------------------------------------------------------ artifacts
    def reference_input(self, built: McuBuilt) -> np.ndarray:
        """The bundle's int8 input: the first calibration input, quantized."""
        from hwnas.passes.quantize import calibration_batch, quantize_input

        shape = built.graph.tensors[built.graph.input].shape
        try:
            x = calibration_batch(shape, source=self.calibration_source, count=1, seed=1)
        except InvalidConfigError:
            x = calibration_batch(shape, source="normal", count=1, seed=1)
        return quantize_input(x, built.quantization["input_scale"], built.quantization["activation_bits"])

    def host_executable(self, built: McuBuilt):
        """The same integer module compiled with LLVM for this machine (built on first use: the
        cost does not need it)."""
        if built.executable is None:
            from hwnas.ir.lower import compile_module

            try:
                with filtered_native_stderr(), built.tvm_target:
                    built.executable = compile_module(built.module, built.tvm_target)
            except Exception as exc:  # TVM's errors are not typed usefully
                raise CompileError(f"compiling the host reference for {self.spec} failed: {error_line(exc)}") from None
        return built.executable

    def run_reference(self, built: McuBuilt, x_q: np.ndarray) -> np.ndarray:
        """The host int8 reference: the same integer module compiled with LLVM, run in the VM."""
        import tvm
        from tvm import relax

        vm = relax.VirtualMachine(self.host_executable(built), tvm.cpu())
        return vm["main"](tvm.runtime.tensor(np.ascontiguousarray(x_q))).numpy()

    def write_c(self, built: McuBuilt, folder: Path, inputs: Sequence[np.ndarray] | None = None) -> dict[str, Path]:
        from hwnas.targets.mcu.bundle import write_bundle

        if inputs is None:
            inputs = [self.reference_input(built)]
        return write_bundle(folder, board=self.board, tvm_c_source=built.c_source, graph=built.graph,
                            plan=built.plan, workspace_bytes=built.workspace_heap, inputs=inputs)

    def _write_expected(self, built: McuBuilt, out_dir: Path, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``expected_output.txt``: the host reference's integer output of each input, one line each."""
        expected = [self.run_reference(built, x_q).ravel() for x_q in inputs]
        (out_dir / "expected_output.txt").write_text(
            "".join("hwnas-output: " + " ".join(str(int(v)) for v in e) + "\n" for e in expected))
        return expected

    def emit(self, built: McuBuilt, out_dir: Path) -> dict[str, Path]:
        out_dir = Path(out_dir)
        inputs = [self.reference_input(built)]
        files = {f"c:{name}": path for name, path in self.write_c(built, out_dir, inputs).items()}
        self._write_expected(built, out_dir, inputs)
        files["expected_output"] = out_dir / "expected_output.txt"
        lib = out_dir / "model.so"
        with filtered_native_stderr():
            self.host_executable(built).export_library(str(lib))
        files["library"] = lib
        return files

    def device_check(self, built: McuBuilt, out_dir: Path, x: np.ndarray, labels: np.ndarray,
                     classes: int) -> dict[str, Any]:
        """The emitted C bundle in ``out_dir`` now holds the test images ``x`` (float, preprocessed): its
        ``input.h`` and ``expected_output.txt`` (host reference) are rewritten for them; the bundle is built
        for QEMU's board and run, and its predictions are compared with the host reference's."""
        from hwnas.passes.quantize import quantize_input
        from hwnas.targets.mcu import toolchain as mcu_toolchain
        from hwnas.targets.mcu.bundle import QEMU_MACHINES, input_header

        quant = built.quantization
        inputs = [quantize_input(x[i:i + 1], quant["input_scale"], quant["activation_bits"]) for i in range(len(x))]
        (out_dir / "input.h").write_text(input_header(inputs))
        host = self._write_expected(built, out_dir, inputs)
        host_pred = [int(np.asarray(h)[:classes].argmax()) for h in host]
        check: dict[str, Any] = {
            "images": len(inputs), "labels": [int(v) for v in labels], "host_predictions": host_pred,
            "device": f"QEMU {QEMU_MACHINES[self.board.core]} ({self.board.core})",
            "by": "the C bundle (input.h: these test images) built and run on that device, against the host "
                  "int8 reference (model.so, expected_output.txt)"}
        missing = mcu_toolchain.missing_tools(qemu=True)
        if missing:
            return {**check, "ran": False, "reason": f"missing {', '.join(missing)}: {mcu_toolchain.SETUP_HINT}"}
        with tempfile.TemporaryDirectory(prefix="hwnas-mcu-check-") as tmp:
            for f in out_dir.iterdir():
                if f.suffix in (".c", ".h", ".ld") or f.name == "Makefile":
                    shutil.copyfile(f, Path(tmp) / f.name)
            mcu_toolchain.make(Path(tmp), "app.elf")
            run = mcu_toolchain.run_qemu(Path(tmp), QEMU_MACHINES[self.board.core], self.board.core,
                                         timeout_s=300.0 * len(inputs))
        device_pred = [int(np.asarray(o)[:classes].argmax()) for o in run.outputs]
        return {**check, "ran": True, "device_predictions": device_pred,
                "predictions_equal": device_pred == host_pred,
                "outputs_equal": [list(map(int, h)) for h in host] == run.outputs}

    def runtime_info(self, built: McuBuilt) -> dict[str, Any]:
        from hwnas.targets.mcu.bundle import QEMU_MACHINES

        plan = built.plan
        return {
            "device": "cpu",
            "note": "model.so is the host int8 reference; the C bundle (Makefile) is the device build",
            "board": dataclasses.asdict(self.board),
            "quantization": built.quantization,
            "memory": {"arena_bytes": plan.arena_bytes, "workspace_heap_bytes": built.workspace_heap,
                       "workspace_stack_bytes": built.workspace_stack,
                       "inplace_depthwise": len(plan.inplace),
                       "order": [built.graph.calls[i].func for i in plan.order]},
            "qemu_machine": QEMU_MACHINES[self.board.core],
            "latency_model": CYCLE_MODEL,
        }



def instructions_per_mac(kind: str, pad: str, storage: str) -> tuple[float, float]:
    """The row of :data:`INSTRUCTIONS_PER_MAC` for a kernel; an unmeasured ``w4a16``/``w2a16`` is its ``a8``
    row plus the difference ``w8a16`` - ``w8a8``."""
    row = INSTRUCTIONS_PER_MAC.get((kind, pad, storage))
    if row is not None:
        return row
    if storage.endswith("a16"):
        w = storage[:-3]
        base, a8, a16 = (INSTRUCTIONS_PER_MAC.get((kind, pad, s)) for s in (f"{w}a8", "w8a8", "w8a16"))
        if base is not None and a8 is not None and a16 is not None:
            return base[0] + a16[0] - a8[0], base[1] + a16[1] - a8[1]
    return INSTRUCTIONS_PER_MAC[(kind, pad, "w8a8")]


def kernel_storage(built: McuBuilt) -> dict[str, str]:
    """Per conv/dense kernel of ``built``: its weight storage and activation width (a key of
    :data:`STORAGES`). A packed weight (a ``uint8`` constant) is recognised by its size: the weight's
    elements at 2 or 4 bits, plus one byte per output channel in the ``offset`` mode."""
    acts = "a16" if built.quantization.get("activation_bits") == 16 else "a8"
    by_func = {w.func: w for w in built.workloads}
    out: dict[str, str] = {}
    for call in built.graph.calls:
        w = by_func.get(call.func)
        if w is None or not w.macs or call.func in out:
            continue
        packed = [built.graph.tensors[a] for a in call.args
                  if built.graph.tensors[a].role == "weight" and built.graph.tensors[a].dtype == "uint8"]
        bits = 8
        if packed:
            if w.conv is not None:
                elements, channels = w.conv.k * (w.conv.c // max(w.conv.groups, 1)) * w.conv.r * w.conv.s, w.conv.k
            else:  # dense: (M, N) x K
                channels = int(w.spatial[-1]) if w.spatial else 1
                elements = int(np.prod(w.reduction)) * channels
            size = int(np.prod(packed[0].shape))
            for b in (2, 4):
                data = -(-elements * b // 8)
                if size in (data, data + channels):
                    bits = b
                    break
        out[call.func] = f"w{bits}{acts}"
    return out


def _is_depthwise(w) -> bool:
    return w is not None and w.conv is not None and w.conv.groups > 1 and w.conv.groups == w.conv.c == w.conv.k
