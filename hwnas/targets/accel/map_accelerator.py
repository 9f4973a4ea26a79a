"""MapAccelerator: choose, per kernel of a fused module, the mapping onto an accelerator template.

Run after fusion, like the CPU schedule passes. For every conv / dense
PrimFunc (read from the TIR by :func:`hwnas.ir.workloads.extract`: its
``N K C P Q R S`` loop nest, stride and groups) the pass searches the bounded
mapping space of :mod:`hwnas.targets.accel.model` (loop tiling so the tiles fit
the global buffer and register files, the DRAM loop order) and keeps the
mapping of least energy x delay. Pooling, reductions and elementwise kernels
get a record too (priced as streaming vector work, no mapping).

The TIR itself is not changed: the host-side module still computes the
network; the per-layer mapping table is attached to the module as the
attribute :data:`MAPPING_ATTR` (a JSON list, one record per kernel, in the
order ``main`` calls them), which the accelerator target's cost and
artifacts read.
"""

from __future__ import annotations

import json
from typing import Any

import tvm

from hwnas.ir.workloads import extract
from hwnas.targets.accel.space import AccelConfig
from hwnas.targets.accel.model import Layer, LayerCost, search_mapping, vector_kernel_cost

#: module attribute holding the mapping table (a JSON string)
MAPPING_ATTR = "hwnas_accel_mapping"


def layer_record(cost: LayerCost) -> dict[str, Any]:
    """The JSON-able summary of one mapped layer call."""
    return {
        "mapping": cost.mapping.as_dict(),
        "cycles": cost.cycles,
        "compute_cycles": cost.compute_cycles,
        "memory_cycles": cost.memory_cycles,
        "fill_drain_cycles": cost.fill_drain_cycles,
        "utilization": cost.utilization,
        "bound": cost.bound,
        "accesses": cost.accesses,
        "dram_bytes": cost.dram_bytes,
        "energy_pj": cost.energy_pj,
        "buffer_bytes": cost.buffer_bytes,
        "overflow": cost.overflow,
    }


def mapping_table(mod, cfg: AccelConfig) -> list[dict[str, Any]]:
    """One record per kernel of the fused module ``mod`` on ``cfg`` (costs are per call)."""
    import numpy as np


    records = []
    for wl in extract(mod):
        base = {"func": wl.func, "kind": wl.kind, "calls": wl.calls, "macs": wl.macs}
        layer = Layer.from_workload(wl)
        if layer is not None:
            cost = search_mapping(layer, cfg)
            records.append({**base, "layer": {**layer.dims, "stride": layer.stride, "h": layer.h, "w": layer.w,
                                              "extra": layer.extra}, **layer_record(cost)})
            continue
        size = np.dtype(wl.dtype).itemsize if wl.dtype else 4
        in_elems = (wl.input_bytes + wl.weight_bytes) // size
        out_elems = wl.output_bytes // size
        vec = vector_kernel_cost(in_elems, out_elems, max(wl.flops, out_elems), cfg)
        records.append({**base, "layer": None, "mapping": None, "cycles": vec.cycles, "compute_cycles": None,
                        "memory_cycles": None, "fill_drain_cycles": 0, "utilization": None, "bound": "vector",
                        "accesses": None, "dram_bytes": vec.dram_bytes, "energy_pj": vec.energy_pj,
                        "buffer_bytes": None, "overflow": 0.0})
    return records


def read_mapping(mod) -> list[dict[str, Any]]:
    """The mapping table a :class:`MapAccelerator` run attached to ``mod`` (empty when none)."""
    attrs = mod.attrs
    if attrs is None or MAPPING_ATTR not in attrs:
        return []
    return json.loads(str(attrs[MAPPING_ATTR]))


@tvm.transform.module_pass(opt_level=0, name="MapAccelerator")
class MapAccelerator:
    """Attach the per-layer mapping of every kernel onto the accelerator ``cfg``."""

    def __init__(self, cfg: AccelConfig) -> None:
        self.cfg = cfg

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return mod.with_attr(MAPPING_ATTR, json.dumps(mapping_table(mod, self.cfg)))
