"""Deployable bundles: ONNX, compiled library, manifest and a stand-alone runner.

A bundle is written into a temporary sibling folder and renamed into place
when complete, so a folder at the requested path is always a whole bundle.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import hwnas
from hwnas.errors import ArtifactError
from hwnas.metrics import overflows
from hwnas.pipeline.evaluate import Evaluation
from hwnas.util import file_sha256

MANIFEST = "manifest.json"

#: Runs a bundle with the stock TVM runtime only (no hwnas, no torch needed).
RUN_PY = '''\
"""Run this hwnas bundle with the stock TVM runtime.

    python run.py                  # a seeded random input; prints the output summary
    python run.py input.npy -o out.npy
"""
import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

here = Path(__file__).resolve().parent
manifest = json.loads((here / "manifest.json").read_text())
runtime = manifest["runtime"]
os.environ.setdefault("TVM_NUM_THREADS", str(runtime.get("num_threads", 1)))

import tvm  # noqa: E402  (after TVM_NUM_THREADS is set)
from tvm import relax  # noqa: E402

parser = argparse.ArgumentParser(description="run the compiled model once")
parser.add_argument("inputs", nargs="*", help="one .npy file per model input, in manifest order")
parser.add_argument("-o", "--output", help="write the first output to this .npy file")
args = parser.parse_args()

specs = manifest["inputs"]
if args.inputs and len(args.inputs) != len(specs):
    sys.exit(f"run.py: the model has {len(specs)} input(s), got {len(args.inputs)} file(s)")
arrays = []
rng = np.random.default_rng(0)
for i, spec in enumerate(specs):
    if args.inputs:
        a = np.load(args.inputs[i]).astype(spec["dtype"])
        if list(a.shape) != spec["shape"]:
            sys.exit(f"run.py: input {spec['name']} must have shape {spec['shape']}, got {list(a.shape)}")
    else:
        a = rng.standard_normal(spec["shape"]).astype(spec["dtype"])
    arrays.append(a)

dev = tvm.device(runtime["device"], 0)
# the runtime logs one line per memory scope while loading: keep stderr for real messages
sys.stderr.flush()
saved_stderr = os.dup(2)
os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
try:
    lib = tvm.runtime.load_module(str(here / runtime["library"]))
finally:
    os.dup2(saved_stderr, 2)
vm = relax.VirtualMachine(lib, dev)
out = vm["main"](*[tvm.runtime.tensor(a, dev) for a in arrays])
outs = list(out) if isinstance(out, (list, tuple)) or type(out).__name__ == "Array" else [out]
result = outs[0].numpy()
if args.output:
    np.save(args.output, result)
print(f"output {manifest['outputs'][0]['name']}: shape {list(result.shape)}, "
      f"argmax {int(result.argmax())}, sum {float(result.sum()):.6f}")
'''


def versions() -> dict[str, str]:
    import onnx
    import torch
    import tvm

    return {
        "hwnas": hwnas.__version__,
        "tvm": str(tvm.__version__),
        "torch": str(torch.__version__),
        "onnx": str(onnx.__version__),
        "numpy": str(np.__version__),
        "python": platform.python_version(),
    }


def check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ArtifactError(f"output folder {out} is not empty; choose another or pass --overwrite")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(f"cannot create output folder {parent}: {exc.strerror or exc}") from None
    if not os.access(parent, os.W_OK):
        raise ArtifactError(f"output folder {parent} is not writable")


def write_bundle(evaluation: Evaluation, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write the bundle of ``evaluation`` to ``out_dir``; return the manifest path."""
    out = Path(out_dir).resolve()
    if evaluation.onnx_path is None:
        raise ArtifactError("this evaluation kept no ONNX file to bundle; evaluate it with a workdir")
    check_out_dir(out, overwrite)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as exc:
        raise ArtifactError(f"cannot write into {out.parent}: {exc.strerror or exc}") from None
    try:
        files: dict[str, Path] = {"onnx": tmp / "model.onnx"}
        shutil.copyfile(evaluation.onnx_path, files["onnx"])
        try:
            files.update(evaluation.target.emit(evaluation.built, tmp))
        except OSError as exc:
            raise ArtifactError(f"writing the compiled library failed: {exc}") from None
        (tmp / "run.py").write_text(RUN_PY)
        files["runner"] = tmp / "run.py"
        manifest = _manifest(evaluation, files)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / MANIFEST


def _manifest(ev: Evaluation, files: dict[str, Path]) -> dict[str, Any]:
    built = ev.built
    names = [n for n in built.inputs]
    import onnx

    model = onnx.load(str(files["onnx"]), load_external_data=False)
    out_names = [o.name for o in model.graph.output]
    capacity = ev.target.capacity()
    over = overflows(ev.metrics, capacity)
    return {
        "format": "hwnas-bundle/1",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "architecture": ev.candidate.architecture(),
        "target": ev.target.spec,
        "tvm_target": str(built.tvm_target),
        "hw": ev.hw,
        "metrics": ev.metrics,
        # False when a metric is over the device's capacity (the figures in "overflow"): the bundle will not fit
        "fits": not over,
        "capacity": capacity,
        "overflow": over,
        "timings_s": {k: round(v, 4) for k, v in ev.timings.items()},
        "inputs": [
            {"name": n, "shape": list(built.inputs[n][0]), "dtype": built.inputs[n][1]} for n in names
        ],
        "outputs": [
            {"name": out_names[i] if i < len(out_names) else f"output{i}", "shape": list(s), "dtype": d}
            for i, (s, d) in enumerate(built.outputs)
        ],
        "runtime": {"library": files["library"].name, **ev.target.runtime_info(built)},
        "files": {role: {"path": p.name, "sha256": file_sha256(p)} for role, p in files.items()},
        "versions": versions(),
    }


def verify_bundle(folder: str | Path) -> dict[str, Any]:
    """Read a bundle's manifest and check every file's sha256; return the manifest."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{folder} holds no readable {MANIFEST}: {exc}") from None
    for role, entry in manifest.get("files", {}).items():
        path = folder / entry["path"]
        if not path.is_file() or file_sha256(path) != entry["sha256"]:
            raise ArtifactError(f"bundle file {path} ({role}) is missing or does not match its sha256")
    return manifest
