"""Published measurements as a cost source: search for a device you do not own.

``published:<device>`` prices an architecture from the tables of
NAS-Bench-201 / HW-NAS-Bench / HELP in the benchmark data folder (see
:mod:`hwnas.data`):

* ``nb201``: ``nb201/latency.csv``, one measured or simulated latency per
  architecture and device (raspi4, pixel3, eyeriss, fpga, 1080ti_1,
  1080ti_32, titanxp_1, gold_6226, gold_6240);
* ``fbnet``: HW-NAS-Bench's per-operator lookup table
  (``fbnet/hwnasbench_lut.json``; latency for edgegpu, raspi4, pixel3,
  eyeriss, fpga and energy for edgegpu, eyeriss, fpga), summed over the
  stem, the 22 layers and the head; devices only in ``fbnet/latency.csv``
  (the GPUs and server CPUs) are known for its 5,000 listed architectures.

``published:fewshot`` prices nb201 or fbnet with a few-shot model of a device
the user does not own (``hwnas predictor fewshot``): ``--target published:fewshot
--cost fewshot:DEV.json`` (see :mod:`hwnas.cost.fewshot`).

Nothing is compiled; the target has no hardware knobs.
"""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path
from typing import Any

from hwnas.cost.fewshot import FewShotModel
from hwnas.data import require_data_file
from hwnas.errors import InvalidConfigError, RunError
from hwnas.hss import HardwareSpace
from hwnas.targets.base import Target

NB201_DEVICES = ("raspi4", "pixel3", "eyeriss", "fpga", "1080ti_1", "1080ti_32", "titanxp_1", "gold_6226", "gold_6240")
FBNET_LUT_DEVICES = ("edgegpu", "raspi4", "pixel3", "eyeriss", "fpga")
FBNET_LIST_DEVICES = ("1080ti_1", "1080ti_32", "1080ti_64", "gold_6226", "gold_6240", "titanxp_1")
DEVICES = tuple(dict.fromkeys(NB201_DEVICES + FBNET_LUT_DEVICES + FBNET_LIST_DEVICES))
#: the variant priced by a few-shot model (``--cost fewshot:DEV.json``) instead of a table
FEWSHOT = "fewshot"


@functools.lru_cache(maxsize=4)
def _latency_columns(path: Path) -> dict[str, dict[str, float]]:
    """``{device: {row key: ms}}`` of a latency csv (key: nb201_index or the fbnet ops string)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        key_field = "nb201_index" if "nb201_index" in (reader.fieldnames or []) else "ops"
        columns = {c[len("lat_ms_"):]: {} for c in reader.fieldnames or [] if c.startswith("lat_ms_")}
        for row in reader:
            for device, table in columns.items():
                value = row[f"lat_ms_{device}"]
                if value not in ("", None):
                    table[row[key_field].strip()] = float(value)
    return columns


@functools.lru_cache(maxsize=2)
def _lut(path: Path) -> dict[str, dict[str, float]]:
    return json.loads(path.read_text())


_NEEDS_MODEL = (f"target published:{FEWSHOT} prices with a device's few-shot model: --cost {FEWSHOT}:DEV.json "
                "(fit one with `hwnas predictor fewshot`)")


@functools.lru_cache(maxsize=4)
def _fewshot_model(path: str, space: str) -> FewShotModel:
    return FewShotModel.load(path, space=space)


class PublishedTarget(Target):
    """A device known from published measurement tables."""

    name = "published"
    description = ("published latency/energy tables (NAS-Bench-201, HW-NAS-Bench); no compile; published:fewshot "
                   "--cost fewshot:DEV.json: a few-shot model of your own device (hwnas predictor fewshot)")
    metrics = ("latency_ms", "energy_mj")
    cost_methods = ("table",)
    compiles = False
    variants = DEVICES + (FEWSHOT,)

    def __init__(self, variant: str | None = None) -> None:
        if variant is None or variant not in self.variants:
            raise InvalidConfigError(
                f"target 'published' needs a device, e.g. published:raspi4; devices: {', '.join(DEVICES)}; "
                f"or published:{FEWSHOT} with --cost {FEWSHOT}:DEV.json"
            )
        super().__init__(variant)
        if variant == FEWSHOT:  # its one method, which needs the model file: --cost fewshot:DEV.json
            self.cost_methods = (FEWSHOT,)

    def cost_method(self, method: str | None) -> str:
        base, _, arg = str(method or "").partition(":")
        if self.variant != FEWSHOT:
            if base == FEWSHOT:
                raise InvalidConfigError(f"--cost {FEWSHOT}:DEV.json goes with --target published:{FEWSHOT}, "
                                         f"not {self.spec}")
            return super().cost_method(method)
        if method is None or method == FEWSHOT:
            return FEWSHOT  # the default method's name; pricing with it asks for the model file
        if base != FEWSHOT or not arg:
            raise InvalidConfigError(_NEEDS_MODEL)
        if not Path(arg).is_file():
            raise InvalidConfigError(f"few-shot model {arg} does not exist; fit one with `hwnas predictor fewshot`")
        return str(method)

    @functools.cached_property
    def hardware_space(self) -> HardwareSpace:
        return HardwareSpace(name=self.spec, params={})

    def cost_architecture(self, space, genome, hw: dict[str, Any], *, method: str) -> dict[str, float]:
        self.cost_method(method)
        if space is None:
            raise InvalidConfigError(f"{self.spec} prices the nb201 and fbnet spaces only, not an ONNX file")
        device = self.variant
        if device == FEWSHOT:
            if ":" not in method:
                raise InvalidConfigError(_NEEDS_MODEL)
            model = _fewshot_model(str(Path(method.partition(":")[2]).resolve()), space.name)
            if space.name == "nb201" and (space.channels, space.cells_per_stage, space.num_classes) != (16, 5, 10):
                raise InvalidConfigError(f"{self.spec}: the few-shot prior is the published nb201 network "
                                         "(channels=16, cells_per_stage=5, num_classes=10)")
            return {"latency_ms": float(model.predict([tuple(genome)])[0])}
        if space.name == "nb201":
            from hwnas.arch.nb201 import genome_to_index

            if device not in NB201_DEVICES:
                raise InvalidConfigError(f"no nb201 latencies for {device}; nb201 devices: {', '.join(NB201_DEVICES)}")
            shape = (space.channels, space.cells_per_stage, space.num_classes)
            if shape != (16, 5, 10):
                raise InvalidConfigError(
                    f"{self.spec}: the published nb201 latencies are for channels=16, cells_per_stage=5, "
                    f"num_classes=10; this space has {shape[0]}, {shape[1]}, {shape[2]}"
                )
            table = _latency_columns(require_data_file("nb201/latency.csv"))[device]
            return {"latency_ms": table[str(genome_to_index(genome))]}
        if space.name == "fbnet":
            if device in FBNET_LUT_DEVICES:
                from hwnas.arch.fbnet import layer_keys

                lut = _lut(require_data_file("fbnet/hwnasbench_lut.json"))
                keys = layer_keys(genome, num_classes=space.num_classes)
                out = {"latency_ms": sum(lut[f"{device}_latency"][k] for k in keys)}
                if f"{device}_energy" in lut:
                    out["energy_mj"] = sum(lut[f"{device}_energy"][k] for k in keys)
                return out
            table = _latency_columns(require_data_file("fbnet/latency.csv")).get(device)
            if table is None:
                raise InvalidConfigError(f"no fbnet latencies for {device}")
            ops = " ".join(str(g) for g in genome)
            if ops not in table:
                raise RunError(f"{self.spec} lists 5,000 fbnet architectures; {ops!r} is not among them")
            return {"latency_ms": table[ops]}
        raise InvalidConfigError(f"{self.spec} has tables for nb201 and fbnet only, not {space.name}")
